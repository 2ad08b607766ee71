"""Request-time context for live scores: what exists only when the user acts (the hour of the latest event, the
device it came from, the session's last items), turned into per-item terms that fusion adds to the batch
components. The batch model sees a user's history; these terms say what fits *now*:

- hour:    the item's time-of-day lift, log((n[i, h] + m * p_h) / (n[i] + m) / p_h), where n counts the item's
           training steps by hour of day, p_h is the catalogue-wide share of hour h and m is `prior_count`
           pseudo-steps at p_h: an item bought mostly in the evening rises in the evening; rarely seen items
           stay near 0. Clipped to +-`max_lift`.
- device:  the same lift by device (web, mobile, ...), from the raw rows' `device` field where the feed has one.
- session: the share of the session's last `session_events` items in the item's category (0..1): the intent of
           the visit, which a nightly history cannot know yet.

Pure numpy here, the Spark side builds the count tables (`context_tables`) and each user's request context.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

HOURS = 24
LIVE_COMPONENTS = ("session", "hour", "device")


@dataclass
class LiveSettings:
    weights: dict = field(default_factory=lambda: {"session": 0.5, "hour": 0.3, "device": 0.3})
    session_events: int = 5
    prior_count: float = 20.0
    max_lift: float = 1.0

    @classmethod
    def from_conf(cls, live: dict | None) -> "LiveSettings":
        live = live or {}
        defaults = cls()
        weights = {**defaults.weights, **(live.get("weights") or {})}
        unknown = set(weights) - set(LIVE_COMPONENTS)
        if unknown:
            raise ValueError(f"stream.live_context.weights: unknown components {sorted(unknown)}; "
                             f"expected {LIVE_COMPONENTS}")
        return cls(weights={name: float(weights[name]) for name in LIVE_COMPONENTS},
                   session_events=int(live.get("session_events", defaults.session_events)),
                   prior_count=float(live.get("prior_count", defaults.prior_count)),
                   max_lift=float(live.get("max_lift", defaults.max_lift)))


@dataclass
class ContextTables:
    """Lifts per item and context code: hour [n_items + 1, 25] (code = 1 + hour of day, 0 unknown) and device
    [n_items + 1, len(devices) + 1] (code = 1 + position in `devices`, 0 unknown); rows of unknown codes are 0."""

    hour: np.ndarray
    device: np.ndarray
    devices: tuple = ()

    def device_code(self, device) -> int:
        if device is None or device not in self.devices:
            return 0
        return 1 + self.devices.index(device)


@dataclass
class RequestContext:
    hour: int = 0                 # 1 + UTC hour of the user's latest event (0: unknown)
    device: str | None = None
    session_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # time ordered


def affinity_lift(item_idx: np.ndarray, codes: np.ndarray, counts: np.ndarray, n_items: int, n_codes: int,
                  prior_count: float, max_lift: float) -> np.ndarray:
    """[n_items + 1, n_codes + 1] shrunk log-lift of each item under each context code 1..n_codes (column 0 and
    items without counts: 0). `counts[j]` steps of item `item_idx[j]` were taken under code `codes[j]`."""
    table = np.zeros((n_items + 1, n_codes + 1))
    keep = (item_idx >= 1) & (item_idx <= n_items) & (codes >= 1) & (codes <= n_codes)
    np.add.at(table, (item_idx[keep], codes[keep]), counts[keep])
    totals = table.sum(axis=1, keepdims=True)
    overall = table.sum(axis=0)
    if overall.sum() == 0:
        return np.zeros_like(table)
    share = overall / overall.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.log((table + prior_count * share) / (totals + prior_count) / share)
    lift = np.where(np.isfinite(lift), lift, 0.0)
    lift[:, 0] = 0.0
    return np.clip(lift, -max_lift, max_lift)


def session_affinity(session_items: np.ndarray, categories: np.ndarray, last: int) -> np.ndarray:
    """[n_items + 1] the share of the session's last `last` items that are in each item's category."""
    scores = np.zeros(len(categories))
    recent = np.asarray(session_items, dtype=np.int64)[-last:] if last else np.zeros(0, np.int64)
    recent = recent[(recent >= 1) & (recent < len(categories))]
    known = [c for c in categories[recent] if c is not None]
    if not known:
        return scores
    names, counts = np.unique(np.asarray(known, dtype=object), return_counts=True)
    share = dict(zip(names.tolist(), (counts / len(recent)).tolist()))
    return np.asarray([share.get(c, 0.0) if c is not None else 0.0 for c in categories], dtype=np.float64)


def context_parts(request: RequestContext, tables: ContextTables, categories: np.ndarray,
                  settings: LiveSettings) -> dict[str, np.ndarray]:
    """The weighted live terms, dense over items ([n_items + 1] each), for fusion.rank_user(context_parts=...)."""
    weights = settings.weights
    hour = min(max(int(request.hour or 0), 0), tables.hour.shape[1] - 1)
    return {
        "session": weights["session"] * session_affinity(request.session_items, categories, settings.session_events),
        "hour": weights["hour"] * tables.hour[:, hour],
        "device": weights["device"] * tables.device[:, tables.device_code(request.device)],
    }


def context_tables(hour_counts, device_counts, n_items: int, settings: LiveSettings) -> ContextTables:
    """ContextTables from two pandas frames of counts: (item_idx, hour, count) with hour the 1-based code and
    (item_idx, device, count)."""
    as_int = lambda frame, column: frame[column].to_numpy(dtype=np.int64)  # noqa: E731
    hour = affinity_lift(as_int(hour_counts, "item_idx"), as_int(hour_counts, "hour"),
                         hour_counts["count"].to_numpy(dtype=np.float64), n_items, HOURS, settings.prior_count,
                         settings.max_lift)
    devices = tuple(sorted(str(d) for d in device_counts["device"].dropna().unique()))
    codes = np.asarray([1 + devices.index(str(d)) if d is not None else 0 for d in device_counts["device"]],
                       dtype=np.int64)
    device = affinity_lift(as_int(device_counts, "item_idx"), codes, device_counts["count"].to_numpy(dtype=np.float64),
                           n_items, len(devices), settings.prior_count, settings.max_lift)
    return ContextTables(hour=hour, device=device, devices=devices)
