"""Collection in appearance-randomised floors: the worker's sim config, and a dataset
fingerprint that changes only when the collection asks for it."""

from __future__ import annotations

from nav_policy.collect import collection_fingerprint, collection_sim
from nav_policy.config import load_nav_config


def test_appearance_jitter_reaches_the_collection_sim_only():
    plain = load_nav_config()
    jittered = load_nav_config(overrides={"collect.appearance_jitter": 0.2})
    assert collection_sim(plain) is plain.sim
    assert collection_sim(jittered).world.appearance_jitter == 0.2
    assert jittered.sim.world.appearance_jitter == 0.0  # evaluation keeps the family's look
    assert collection_fingerprint(plain, None, None) != collection_fingerprint(jittered, None, None)
    zero = load_nav_config(overrides={"collect.appearance_jitter": 0.0})
    assert collection_fingerprint(zero, None, None) == collection_fingerprint(plain, None, None)
