import pytest

from collection.query import QuerySyntaxError, parse_query, strip_control_characters


def test_tag_tokens_are_split_from_free_text():
    parsed = parse_query("tag:Dog beach tag:sea_side")
    assert parsed.text == "beach"
    assert parsed.tags == ("dog", "sea side")


def test_quoted_tags_may_contain_spaces():
    assert parse_query('tag:"hot dog" on a plate').tags == ("hot dog",)


def test_a_query_of_tags_alone_searches_for_the_tag_words():
    parsed = parse_query("tag:dog")
    assert parsed.text == "dog" and parsed.tags == ("dog",)


@pytest.mark.parametrize("bad", ["tag: beach", 'tag:"hot dog beach', "tag:"])
def test_bad_tag_syntax_is_refused_with_a_hint(bad):
    with pytest.raises(QuerySyntaxError, match="tag"):
        parse_query(bad)


def test_control_characters_are_removed():
    assert strip_control_characters("a\x00b\x1b[31mc\u202ed\tz") == "ab[31mcd z"


def test_words_that_merely_contain_tag_are_free_text():
    assert parse_query("vintage:look hashtag:x").tags == ()
