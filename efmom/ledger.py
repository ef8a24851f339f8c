"""The cost ledger: what a run has spent, in the units of the released records and their figures."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Ledger:
    """Cumulative costs of a run, counted per round from the method's nominal costs.

    ``backprop_equivalents`` adds the method's backprops per step each round (the released
    ``cum_bp_eq_total``: n workers each spend that many, divided by n). ``examples_backprops``
    adds that cost times the round's per-worker batch size (``cum_ex_bp_total``). ``bits`` adds the
    bits one worker sent, averaged over workers (``cum_bits_total``), the uncompressed first round
    of the EF21 family included.

    The nominal cost is counted also in rounds where η = 1 lets efmom skip a Hessian-vector
    product or second gradient, because the released records count it that way.
    """

    backprop_equivalents: float = 0.0
    examples_backprops: float = 0.0
    bits: float = 0.0

    def add_round(self, backprops: int, batch_size: int, bits_per_worker: float) -> None:
        self.backprop_equivalents += backprops
        self.examples_backprops += backprops * batch_size
        self.bits += bits_per_worker

    def state_dict(self) -> dict[str, float]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, float]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
