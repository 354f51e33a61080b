"""The collated batch contract: construction by collate, row slicing, device moves and pickling."""

import dataclasses
import pickle

import pytest
import torch
from lightning.pytorch.utilities import move_data_to_device
from torch.utils.data import DataLoader, IterableDataset

from nemo_emmett.data.batch import BATCH_LEVEL, TranslationBatch
from nemo_emmett.data.dataset import collate
from nemo_emmett.data.examples import make_text_example
from nemo_emmett.data.sampler import Batch
from tests.conftest import WordLengthIds

TENSORS = [f.name for f in dataclasses.fields(TranslationBatch) if f.default is None]  # the optional tensors


def full_batch(B: int = 4) -> TranslationBatch:
    """Every field set, each row recognisable: row ``i`` of every tensor starts with ``i``."""
    def rows(*shape: int) -> torch.Tensor:
        return torch.arange(B)[(slice(None), *([None] * len(shape)))] * torch.ones(B, *shape, dtype=torch.long)

    return TranslationBatch(
        modality="audio", bucket=3, ids=[f"id{i}" for i in range(B)], tasks=["st", "asr", "st", "asr"][:B],
        source_langs=[f"s{i}" for i in range(B)], target_langs=[f"t{i}" for i in range(B)],
        source_texts=[f"src {i}" for i in range(B)], target_texts=[f"tgt {i}" for i in range(B)],
        **{name: rows(5) if name.endswith("_ids") or name == "audio" else rows() for name in TENSORS},
    )


def text_collated() -> TranslationBatch:
    exs = [make_text_example(example_id=f"x{i}", source_text="a bb ccc"[: 2 * i + 1], target_text="dd e",
                             source_lang="en", target_lang="de", dataset="d") for i in range(3)]
    return collate(Batch("text", 2, 9, 9, exs, [(1, 1)] * 3), sampling_rate=16000, text=WordLengthIds())


def test_collate_builds_a_text_batch_with_the_audio_fields_absent():
    b = text_collated()
    assert isinstance(b, TranslationBatch) and len(b) == 3
    assert (b.modality, b.bucket, b.ids) == ("text", 2, ["x0", "x1", "x2"])
    assert b.directions == [("mt", "en", "de")] * 3
    assert b.source_ids.shape == (3, 2) and b.source_lens.tolist() == [1, 2, 2]  # "a", "a b", "a bb"
    assert b.target_ids.tolist() == [[4, 3, 1]] * 3 and b.prompt_ids.tolist() == [[2]] * 3
    assert b.audio is None and b.audio_lens is None and b.transcript_ids is None and b.transcript_lens is None


def test_collate_without_a_tokenizer_leaves_every_tensor_absent():
    exs = [make_text_example(example_id="x", source_text="a", target_text="b", source_lang="en", target_lang="de",
                             dataset="d")]
    b = collate(Batch("text", 0, 1, 1, exs, [(1, 1)]), sampling_rate=16000)
    assert all(getattr(b, name) is None for name in TENSORS) and b.target_texts == ["b"]


def test_take_rows_slices_every_per_example_field_and_keeps_the_rest():
    b = full_batch()
    index = torch.tensor([2, 0])
    sub = b.take_rows(index)
    assert isinstance(sub, TranslationBatch) and len(sub) == 2
    for f in dataclasses.fields(TranslationBatch):
        value, got = getattr(b, f.name), getattr(sub, f.name)
        if f.name in BATCH_LEVEL:
            assert got == value
        elif isinstance(value, torch.Tensor):
            assert torch.equal(got, value[index]), f.name
            first = got[:, 0] if got.dim() > 1 else got
            assert first.tolist() == [2, 0], f.name
        else:
            assert got == [value[2], value[0]], f.name
    assert len(b) == 4 and b.ids == ["id0", "id1", "id2", "id3"]  # the original is left alone


def test_take_rows_keeps_absent_fields_absent():
    sub = text_collated().take_rows(torch.tensor([1]))
    assert sub.ids == ["x1"] and sub.source_lens.tolist() == [2]
    assert sub.audio is None and sub.transcript_ids is None


def test_move_data_to_device_keeps_the_type_and_every_field():
    b = full_batch()
    moved = move_data_to_device(b, torch.device("meta"))  # a real move, without an accelerator
    assert type(moved) is TranslationBatch
    for name in TENSORS:
        assert getattr(moved, name).device.type == "meta" and getattr(moved, name).shape == getattr(b, name).shape
    assert getattr(b, TENSORS[0]).device.type == "cpu"  # a new batch: the original stays where it was
    for f in dataclasses.fields(TranslationBatch):
        if f.name not in TENSORS:
            assert getattr(moved, f.name) == getattr(b, f.name), f.name
    text = move_data_to_device(text_collated(), torch.device("meta"))
    assert text.audio is None and text.source_ids.device.type == "meta"


def test_pickles_whole():
    b = full_batch()
    back = pickle.loads(pickle.dumps(b))
    assert type(back) is TranslationBatch and back.ids == b.ids and back.bucket == 3
    assert all(torch.equal(getattr(back, n), getattr(b, n)) for n in TENSORS)


class _Yields(IterableDataset):
    def __iter__(self):
        yield full_batch()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_passes_through_a_dataloader_unchanged(num_workers):
    loader = DataLoader(_Yields(), batch_size=None, num_workers=num_workers)
    (got,) = list(loader)
    b = full_batch()
    assert type(got) is TranslationBatch and got.ids == b.ids and got.modality == "audio"
    assert all(torch.equal(getattr(got, n), getattr(b, n)) for n in TENSORS)
