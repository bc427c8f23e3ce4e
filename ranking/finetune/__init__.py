"""Fine-tuning the CLIP encoder from feedback without forgetting: pairs, contrastive loss, WiSE-FT, the gate."""
