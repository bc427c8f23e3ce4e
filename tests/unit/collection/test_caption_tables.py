"""Caption tables as the public sets ship them: one row per caption, pipes, JSON lines, column aliases."""

import json

import pytest

from collection.ingestion.sources import SourceError, detect_items, table_items


def captions_of(items) -> dict[str, list[str]]:
    return {item.path.name: item.captions for item in items}


def test_flickr8k_csv_one_row_per_caption_is_merged_per_image(tmp_path):
    table = tmp_path / "captions.txt"  # Flickr8k's Kaggle file: .txt with an image,caption header
    table.write_text(
        "image,caption\n"
        "1000268201_693b08cb0e.jpg,A child in a pink dress is climbing up a set of stairs .\n"
        '1000268201_693b08cb0e.jpg,"A girl going into a wooden building, smiling ."\n'
        "1001773457_577c3a7d70.jpg,A black dog and a spotted dog are fighting\n"
        "1000268201_693b08cb0e.jpg,A little girl climbing into a wooden playhouse .\n"
    )
    items = list(detect_items(table))
    assert captions_of(items) == {
        "1000268201_693b08cb0e.jpg": [
            "A child in a pink dress is climbing up a set of stairs .",
            "A girl going into a wooden building, smiling .",
            "A little girl climbing into a wooden playhouse .",
        ],
        "1001773457_577c3a7d70.jpg": ["A black dog and a spotted dog are fighting"],
    }
    assert [item.path.parent for item in items] == [tmp_path, tmp_path]


def test_flickr30k_pipe_table_with_spaces_and_quotes(tmp_path):
    table = tmp_path / "results.csv"
    table.write_text(
        "image_name| comment_number| comment\n"
        "1000092795.jpg| 0| Two young guys with shaggy hair look at their hands .\n"
        '1000092795.jpg| 1| "Hello" says a man to a friend .\n'
        "10002456.jpg| 0| Several men in hard hats are operating a giant pulley system .\n"
    )
    images = tmp_path / "flickr30k_images"
    items = list(detect_items(table, images_dir=images))
    assert captions_of(items) == {
        "1000092795.jpg": ["Two young guys with shaggy hair look at their hands .", '"Hello" says a man to a friend .'],
        "10002456.jpg": ["Several men in hard hats are operating a giant pulley system ."],
    }
    assert {item.path.parent for item in items} == {images.resolve()}


def test_a_bad_row_refuses_its_whole_image_with_the_line_number_and_keeps_the_others(tmp_path):
    table = tmp_path / "results.csv"
    table.write_text(
        "image_name| comment_number| comment\n"
        "a.jpg| 0| A dog runs .\n"
        "b.jpg| 0| A cat sleeps .\n"
        "a.jpg| 4 A dog runs across the grass .\n"  # as Flickr30k ships row 19999: a lost '|'
    )
    items = {item.path.name: item for item in table_items(table)}
    assert items["a.jpg"].problem.endswith("results.csv:4: 2 field(s) where the header has 3.")
    assert items["b.jpg"].problem == "" and items["b.jpg"].captions == ["A cat sleeps ."]


def test_jsonl_img2dataset_urls_and_file_text_aliases(tmp_path):
    (tmp_path / "shard").mkdir()
    table = tmp_path / "pairs.jsonl"
    lines = [
        {"url": (tmp_path / "shard" / "0001.jpg").as_uri(), "caption": "a red kite"},
        {"file": "shard/0002.jpg", "text": "a blue boat", "tags": ["Sea"]},
        {"filename": "shard/0001.jpg", "sentence": "a kite in the sky"},
    ]
    table.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    items = list(detect_items(table))
    assert captions_of(items) == {"0001.jpg": ["a red kite", "a kite in the sky"], "0002.jpg": ["a blue boat"]}
    assert items[1].tags == ["sea"]


def test_remote_urls_are_refused_per_image_not_fetched(tmp_path):
    table = tmp_path / "pairs.jsonl"
    table.write_text(json.dumps({"url": "https://example.com/x.jpg", "caption": "remote"}) + "\n")
    (item,) = table_items(table)
    assert "remote URL" in item.problem and "pairs.jsonl:1" in item.problem and item.captions == []


def test_a_row_that_names_no_image_refuses_the_whole_source(tmp_path):
    table = tmp_path / "pairs.jsonl"
    table.write_text(json.dumps({"file": "a.jpg", "caption": "ok"}) + "\n{broken\n" + json.dumps({"text": "x"}) + "\n")
    with pytest.raises(SourceError, match=r"2 bad row\(s\), nothing ingested") as caught:
        table_items(table)
    assert "pairs.jsonl:2: not JSON" in str(caught.value) and "pairs.jsonl:3: no image named" in str(caught.value)


def test_rows_outside_the_images_folder_are_refused(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("path,caption\n../../etc/passwd,x\nok.jpg,y\n")
    # A table reaching outside its folder is refused whole, before any of its files is read.
    with pytest.raises(SourceError, match="outside the folder"):
        list(table_items(table))


def test_format_flag_overrides_detection(tmp_path):
    table = tmp_path / "captions.data"  # an extension nothing detects
    table.write_text("image_name|comment_number|comment\nx.jpg|0|a pipe caption\n")
    with pytest.raises(SourceError, match="--format"):
        detect_items(table)
    assert captions_of(detect_items(table, source_format="flickr30k")) == {"x.jpg": ["a pipe caption"]}
    with pytest.raises(SourceError, match="Unknown format"):
        detect_items(table, source_format="parquet")


def test_header_without_an_image_column_names_the_aliases(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("name,caption\nx,y\n")
    with pytest.raises(SourceError, match="image column .*image_name"):
        table_items(table)


def test_an_external_id_column_names_the_catalogue_id_and_must_agree_across_rows(tmp_path):
    table = tmp_path / "captions.csv"
    table.write_text(
        "image,caption,external_id\n"
        "a.jpg,a snowy owl,owl-1\n"
        "a.jpg,an owl on a post,\n"  # later rows of one image may leave it out
        "b.jpg,a heron,heron-1\n"
        "b.jpg,a grey heron,heron-2\n"  # two ids for one image: that image is refused
        "c.jpg,a swan,has space\n"
    )
    items = {item.path.name: item for item in table_items(table)}
    assert items["a.jpg"].external_id == "owl-1" and not items["a.jpg"].problem
    assert "heron-2" in items["b.jpg"].problem
    assert "external_id" in items["c.jpg"].problem
