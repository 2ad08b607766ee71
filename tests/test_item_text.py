"""Which catalogue items get a text passage for the encoder (and so a route in for cold start)."""
from __future__ import annotations

from socialrec.features.sequences import item_index, item_text


def test_a_category_alone_is_text_and_an_item_without_any_is_left_out(spark):
    items = spark.createDataFrame(
        [("titled", "Red kettle", None, "kitchen"), ("category-only", None, None, "DVDs"),
         ("bare", None, None, None)],
        "item_id string, title string, description string, category string")
    events = spark.createDataFrame([("bare",), ("unlisted",)], "item_id string")

    index = item_index(events, items)
    has_text = {row.item_id: row.has_text for row in index.collect()}
    assert has_text == {"titled": True, "category-only": True, "bare": False, "unlisted": False}

    texts = {row.item_id: row.text for row in item_text(index, items).collect()}
    assert texts == {"titled": "Red kettle. Category: kitchen", "category-only": "Category: DVDs"}
