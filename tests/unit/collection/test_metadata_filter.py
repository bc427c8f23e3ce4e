"""Metadata filters: the query syntax and the API's parameters give the same terms; bad filters say why."""

import pytest

from collection.metadata_filter import InvalidFilter, Term, filter_from_params, parse_filter_tokens
from collection.query import QuerySyntaxError, parse_query

FIELDS = {"date": "date", "author": "keyword", "licence": "keyword", "price": "number", "hdr": "boolean"}


def terms(text):
    rest, parsed = parse_filter_tokens(text, FIELDS)
    return rest, parsed.terms


def test_filter_tokens_are_split_from_free_text():
    rest, found = terms("dog on a beach author:smith,jones -licence:cc-by-nc date>=2020-01-01")
    assert rest == "dog on a beach"
    assert found == (
        Term("author", "keyword", values=("smith", "jones")),
        Term("licence", "keyword", values=("cc-by-nc",), negated=True),
        Term("date", "date", low="2020-01-01"),
    )


def test_a_quoted_keyword_is_one_value_commas_and_all():
    assert terms('author:"Doe, Jane" cat')[1] == (Term("author", "keyword", values=("Doe, Jane",)),)


@pytest.mark.parametrize(
    ("token", "low", "high"),
    [
        ("date:2021", "2021-01-01", "2022-01-01"),
        ("date:2021-12", "2021-12-01", "2022-01-01"),
        ("date:2021-02-28", "2021-02-28", "2021-03-01"),
        ("date<=2021-06", None, "2021-07-01"),  # inclusive of the whole month: below its end
        ("date<2021-06", None, "2021-06-01"),
        ("date>2021", "2022-01-01", None),
        ("date:2020..2021-03", "2020-01-01", "2021-04-01"),
    ],
)
def test_dates_are_half_open_periods(token, low, high):
    (term,) = terms(token)[1]
    assert (term.low, term.high) == (low, high)
    assert term.high is None or term.high_inclusive is False


def test_number_ranges_and_exact_values():
    assert terms("price:10..20")[1] == (Term("price", "number", low=10, high=20),)
    assert terms("price>9.5")[1] == (Term("price", "number", low=9.5, low_inclusive=False),)
    assert terms("price:3,4")[1] == (Term("price", "number", values=(3, 4)),)
    assert terms("hdr:yes")[1] == (Term("hdr", "boolean", values=(True,)),)


def test_undeclared_names_stay_words():
    assert terms("time:10pm camera:nikon dog") == ("time:10pm camera:nikon dog", ())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("author>=smith", "keyword field: compare it with author:VALUE"),
        ("price:cheap", "not a number"),
        ("date>=yesterday", "not YYYY-MM-DD"),
        ("date:2021-13", "not a month"),
        ("author:", "has no value"),
        ('author:"jane doe', "not closed"),
    ],
)
def test_bad_filters_say_how_to_write_them(text, message):
    with pytest.raises(InvalidFilter, match=message):
        parse_filter_tokens(text, FIELDS)


def test_the_query_parser_reports_filter_errors_as_syntax_errors():
    with pytest.raises(QuerySyntaxError, match="not a number"):
        parse_query("beach price>=lots", FIELDS)
    parsed = parse_query("tag:dog beach author:smith", FIELDS)
    assert (parsed.text, parsed.tags, parsed.metadata.describe()) == ("beach", ("dog",), "author:smith")


def test_api_parameters_give_the_same_terms():
    params = {"author": ["smith", "jones"], "licence_not": ["cc-by-nc"], "date_from": ["2020-01-01"], "q": ["x"]}
    found = filter_from_params(params, FIELDS).terms
    assert found == (
        Term("author", "keyword", values=("smith", "jones")),
        Term("licence", "keyword", values=("cc-by-nc",), negated=True),
        Term("date", "date", low="2020-01-01"),
    )
    (to,) = filter_from_params({"date_to": ["2020-05"]}, FIELDS).terms
    assert to.high == "2020-06-01" and not to.high_inclusive


def test_api_ranges_only_for_dates_and_numbers():
    with pytest.raises(InvalidFilter, match="only date and number") as raised:
        filter_from_params({"author_from": ["a"]}, FIELDS)
    assert raised.value.field == "author_from"


def test_sql_is_containment_for_values_and_jsonb_comparison_for_ranges():
    _, parsed = parse_filter_tokens("author:smith,jones -price>=10", FIELDS)
    sql, params = parsed.sql("i")
    assert sql == (
        "(i.metadata @> %s::jsonb OR i.metadata @> %s::jsonb) AND "
        "NOT coalesce((jsonb_typeof(i.metadata -> 'price') = 'number' AND i.metadata -> 'price' >= %s::jsonb), false)"
    )
    assert params == ['{"author": "smith"}', '{"author": "jones"}', "10"]
    named, named_params = parsed.named_sql("i")
    assert "%(meta2)s::jsonb" in named and named_params["meta0"] == '{"author": "smith"}'
