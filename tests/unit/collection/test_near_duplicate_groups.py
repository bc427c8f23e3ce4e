"""Grouping near-duplicate pairs (single linkage) and keeping one image per group in a served order."""

from collection.near_duplicates import Groups, first_of_each_group


def test_pairs_chain_into_groups_named_by_their_lowest_image():
    groups = Groups()
    groups.join(9, 4, 0.97)
    groups.join(4, 7, 0.99)  # 9 and 7 were never compared: a burst's ends may differ more than the threshold
    groups.join(30, 21, 0.96)
    groups.join(5, 5, 1.0)  # an image alone is no group
    assert groups.members() == {4: [4, 7, 9], 21: [21, 30]}
    # Each image keeps the best similarity it was found with.
    assert groups.similarity[4] == 0.99 and groups.similarity[9] == 0.97


def test_joining_two_groups_keeps_the_lower_name_whatever_the_order():
    one, other = Groups(), Groups()
    for a, b in [(10, 11), (3, 12), (12, 11)]:
        one.join(a, b, 0.96)
    for a, b in [(12, 11), (11, 10), (12, 3)]:
        other.join(a, b, 0.96)
    assert one.members() == other.members() == {3: [3, 10, 11, 12]}


def test_an_order_keeps_the_first_image_of_each_group_and_every_ungrouped_one():
    groups = {7: 4, 4: 4, 9: 4, 30: 21, 21: 21}
    assert first_of_each_group([9, 1, 4, 30, 2, 7, 21, 3], groups) == [9, 1, 30, 2, 3]
    assert first_of_each_group([1, 2, 3], {}) == [1, 2, 3]
