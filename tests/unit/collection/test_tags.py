from collection.tags import clean_tag, clean_tags, split_tag_list


def test_tags_are_lower_cased_trimmed_and_folded():
    assert clean_tag("  Car_Side ") == "car side"
    assert clean_tag("Hot   Dog") == "hot dog"


def test_duplicates_and_empty_tags_are_dropped_keeping_order():
    assert clean_tags(["Dog", "cat", " dog ", "", "  ", "CAT", "bird"]) == ["dog", "cat", "bird"]


def test_comma_separated_lists_are_split_and_cleaned():
    assert split_tag_list("beach, Dog ,,dog,sea_side") == ["beach", "dog", "sea side"]
