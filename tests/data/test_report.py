"""What the training steps consumed: padding of collated batches, batches per bucket, realised shares;
and the bucket boxes the bin plot draws."""

import pytest
import torch

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.data.bin_plot import bucket_boxes, bucket_counts
from nemo_emmett.data.bucketing import BucketGrid
from nemo_emmett.data.report import BatchTally, collated_padding, realised_shares
from nemo_emmett.data.sampler import ModalityBuckets


def text_batch(source_lens, target_lens, bucket=0):
    b = len(source_lens)
    return TranslationBatch(
        modality="text", bucket=bucket, ids=[str(i) for i in range(b)], tasks=["mt"] * b, source_langs=["en"] * b,
        target_langs=["de"] * b, source_texts=[""] * b, target_texts=[""] * b,
        source_ids=torch.zeros(b, max(source_lens), dtype=torch.long), source_lens=torch.tensor(source_lens),
        target_ids=torch.zeros(b, max(target_lens), dtype=torch.long), target_lens=torch.tensor(target_lens))


def test_collated_padding_counts_real_and_padded_elements():
    assert collated_padding(text_batch([4, 2], [3, 3])) == (6.0, 8.0, 6.0, 6.0)


def test_tally_counts_batches_per_bucket_and_padding_per_window():
    tally = BatchTally()
    tally.add(text_batch([4, 2], [3, 1], bucket=1))
    tally.add(text_batch([4, 4], [2, 2], bucket=1))
    tally.add(text_batch([1], [1], bucket=0))
    assert tally.bucket_counts() == {"batches_text_bucket0": 1.0, "batches_text_bucket1": 2.0}
    assert tally.take_padding() == {"padding_text_input": pytest.approx(1 - 15 / 17),
                                    "padding_text_output": pytest.approx(1 - 9 / 11)}
    assert tally.take_padding() == {}  # a new window
    assert tally.bucket_counts()["batches_text_bucket1"] == 2.0  # counts stay


def test_realised_shares_sum_over_slots_within_each_group():
    slots = [{"a": 3, "b": 1, "au": 2}, {"a": 1, "b": 3, "au": 6}]
    assert realised_shares(slots, {"a": "", "b": "", "au": ""}) == {
        "share_a": 4 / 16, "share_au": 8 / 16, "share_b": 4 / 16}
    assert realised_shares(slots, {"a": "text", "b": "text", "au": "audio"}) == {
        "share_a": 0.5, "share_au": 1.0, "share_b": 0.5}  # fused: one multiplexer per modality


def test_bucket_boxes_and_counts():
    bins = [(10.0, 5.0), (10.0, 9.0), (20.0, 7.0)]
    assert bucket_boxes(bins) == [(0.0, 0.0, 10.0, 5.0), (0.0, 5.0, 10.0, 9.0), (10.0, 0.0, 20.0, 7.0)]
    mb = ModalityBuckets(BucketGrid(bins, outliers="drop"), [8, 4, 2])
    lengths = torch.tensor([[3, 2], [9, 5], [9, 6], [15, 7], [15, 8]]).numpy()
    assert bucket_counts(lengths, mb) == [2, 1, 1]  # (15, 8) fits no bucket
