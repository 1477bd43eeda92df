"""What a build did: :class:`BuildSummary`, and the report ``featstore build`` prints."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BuildSummary"]


@dataclass
class BuildSummary:
    """What a :func:`build` call did.

    Attributes
    ----------
    out : str
        The store.
    format : str
        ``"zarr"`` or ``"hdf5"``.
    written : dict[str, int]
        Utterances written by this call, per split.
    quarantined : dict[str, int]
        Utterances quarantined by this call, per split.
    skipped : dict[str, int]
        Utterances already done by an earlier (interrupted or finished) run, per split.
    wall_seconds : float
        Wall time of this call.
    audio_seconds : float
        Seconds of audio extracted by this call (each augmented view counts once).
    noop : bool
        True when the store was already complete.
    quarantine : list of (str, str, str)
        Every quarantined utterance of the store: ``(split, utt_id, reason)``.
    labels : dict[str, dict[str, int]]
        Per split, the utterances in the store by key: ``{"bonafide": n, "spoof": n}``
        (plus ``"unknown"`` for key-less trial lists).
    warnings : list of str
        Legal but suspicious input (ids in two splits, clipped audio), for the user to check.
    augmentation : str
        The augmented views of the store (``3 view(s) of train by 'rawboost-5', seed 0``),
        ``""`` without views.
    views_written, views_skipped : dict[str, int]
        Per augmented split, utterances whose views this call made / an earlier run made.
    view_quarantine : list of (str, str, int, str)
        Every quarantined view of the store: ``(split, utt_id, view, reason)``; its rows
        copy the clean ones and ``Store.view_mask`` excludes it.
    """

    out: str
    format: str
    written: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    wall_seconds: float = 0.0
    audio_seconds: float = 0.0
    noop: bool = False
    quarantine: list[tuple[str, str, str]] = field(default_factory=list)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    augmentation: str = ""
    views_written: dict[str, int] = field(default_factory=dict)
    views_skipped: dict[str, int] = field(default_factory=dict)
    view_quarantine: list[tuple[str, str, int, str]] = field(default_factory=list)

    @property
    def realtime_factor(self) -> float:
        """Audio seconds processed per wall second."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def __str__(self) -> str:
        return self.report()

    def report(self, max_quarantined: int | None = 20) -> str:
        """The summary for the user, listing at most ``max_quarantined`` quarantined utterances.

        Parameters
        ----------
        max_quarantined : int or None, default 20
            How many quarantined utterances to list (None: every one).
        """
        if self.noop:
            views = f"; augmented views: {self.augmentation}" if self.augmentation else ""
            head = (
                f"{self.out} is already complete ({sum(self.skipped.values())} utterances, "
                f"{len(self.quarantine)} quarantined{views}); nothing to do"
            )
            return "\n".join([head, *self._quarantine_lines(max_quarantined, noop=True)])
        lines = []
        for split in sorted(set(self.written) | set(self.skipped) | set(self.quarantined)):
            line = f"  {split}: {self.written.get(split, 0)} written"
            if self.quarantined.get(split):
                line += f", {self.quarantined[split]} quarantined"
            if self.skipped.get(split):
                line += f", {self.skipped[split]} already done"
            line += self._label_text(split)
            lines.append(line)
        head = (
            f"built {self.out} ({self.format}) in {self.wall_seconds:.1f} s: "
            f"{self.audio_seconds / 3600:.3f} h of audio, {self.realtime_factor:.0f}x real time"
        )
        views = self._view_lines(max_quarantined)
        return "\n".join([head, *lines, *views, *self._quarantine_lines(max_quarantined)])

    def _view_lines(self, limit: int | None) -> list[str]:
        if not self.augmentation:
            return []
        out = [f"augmented views: {self.augmentation}"]
        for split in sorted(set(self.views_written) | set(self.views_skipped)):
            line = f"  {split}: views of {self.views_written.get(split, 0)} utterance(s) made"
            if self.views_skipped.get(split):
                line += f", {self.views_skipped[split]} already done"
            n_bad = sum(1 for q in self.view_quarantine if q[0] == split)
            if n_bad:
                line += f"; {n_bad} view(s) quarantined (clean copies, masked out)"
            out.append(line)
        shown = self.view_quarantine if limit is None else self.view_quarantine[:limit]
        out += [f"  {split}/{utt} view {k}: {reason}" for split, utt, k, reason in shown]
        if len(shown) < len(self.view_quarantine):
            more = len(self.view_quarantine) - len(shown)
            out.append(f"  ... and {more} more quarantined view(s) (--all lists them)")
        return out

    def _label_text(self, split: str) -> str:
        counts = self.labels.get(split)
        if not counts:
            return ""
        bonafide, spoof = counts.get("bonafide", 0), counts.get("spoof", 0)
        text = f"; in the store: {bonafide} bona fide, {spoof} spoof"
        if counts.get("unknown"):
            text += f", {counts['unknown']} without key"
        return text

    def _quarantine_lines(self, limit: int | None, noop: bool = False) -> list[str]:
        if not self.quarantine or (noop and limit is not None):
            return []
        out = [f"{len(self.quarantine)} utterance(s) quarantined:"]
        shown = self.quarantine if limit is None else self.quarantine[:limit]
        out += [f"  {split}/{utt}: {reason}" for split, utt, reason in shown]
        if len(shown) < len(self.quarantine):
            out.append(f"  ... and {len(self.quarantine) - len(shown)} more (--all lists them)")
        return out
