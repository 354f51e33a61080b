"""What the OOMptimizer found: a batch size per bucket, with its measured peak; as a table, as
JSON (the cache) and as a bucket file (the data config's ``bucket_file``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nemo_emmett.oomptimizer.config import fmt_bytes

CACHE_FORMAT = 2  # bump when what a probe measures changes


@dataclass
class BucketResult:
    bucket: int
    max_input: float
    max_output: float
    batch_size: int
    peak: int
    probes: int
    capped: bool = False


@dataclass
class OOMptimizerResult:
    budget: int
    buckets: dict[str, list[BucketResult]] = field(default_factory=dict)
    key: str = ""
    fused_text_bucket: int | None = None
    """``data.fusion: zip``: the text bucket whose worst-case batch joined every audio probe
    (``oomptimizer/fused.py``); the audio rows' peaks are those fused steps'. None: no fusion."""

    def batch_sizes(self, modality: str) -> list[int]:
        return [r.batch_size for r in sorted(self.buckets[modality], key=lambda r: r.bucket)]

    def bucket_file(self) -> dict[str, Any]:
        """The data config's bucket-file layout (plus measured peaks, which readers ignore)."""
        out = {}
        for modality, rows in self.buckets.items():
            rows = sorted(rows, key=lambda r: r.bucket)
            out[modality] = {"bins": [[r.max_input, r.max_output] for r in rows],
                             "batch_sizes": [r.batch_size for r in rows],
                             "peak_bytes": [r.peak for r in rows], "budget_bytes": self.budget}
        return out

    def table(self) -> str:
        fused = ("" if self.fused_text_bucket is None else
                 f" (fused steps: audio rows measured beside text bucket {self.fused_text_bucket}'s batch)")
        lines = [f"OOMptimizer: memory budget {fmt_bytes(self.budget)}{fused}",
                 f"  {'modality':<8} {'bucket':>6} {'max_in':>8} {'max_out':>8} {'batch':>6} {'peak':>11} "
                 f"{'budget%':>8} {'probes':>6}"]
        for modality, rows in self.buckets.items():
            for r in sorted(rows, key=lambda r: r.bucket):
                cap = " (max_batch_size)" if r.capped else ""
                lines.append(f"  {modality:<8} {r.bucket:>6} {r.max_input:>8.1f} {r.max_output:>8.1f} "
                             f"{r.batch_size:>6} {fmt_bytes(r.peak):>11} {100 * r.peak / self.budget:>7.1f}% "
                             f"{r.probes:>6}{cap}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"format": CACHE_FORMAT, "key": self.key, "budget": self.budget,
                "fused_text_bucket": self.fused_text_bucket, "buckets": {m: [asdict(r) for r in rows] for m, rows in self.buckets.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OOMptimizerResult:
        return cls(budget=data["budget"], key=data["key"], fused_text_bucket=data.get("fused_text_bucket"),
                   buckets={m: [BucketResult(**r) for r in rows] for m, rows in data["buckets"].items()})
