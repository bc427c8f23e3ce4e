"""The card Loupe writes beside a model's weights (what built it, whether it is the random-weight demo)."""

MODEL_CARD_FILE = "loupe_model.json"
