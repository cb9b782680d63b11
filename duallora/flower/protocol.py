"""The message vocabulary both sides of the Flower app speak, declared once.

Runs in: every process of a run (shared by ``server/`` and ``site/``). It imports only
``flwr``, so the ClientApp relay, which must stay free of torch, can use it too.

Message types beyond Flower's ``train`` and ``evaluate``: ``query.hello`` (who are you, how many
training subjects; the first hello of a run may also ask for round 0's head moments) and
``query.head_moments``. Records of a message: ``arrays`` (the payload), ``config`` (round,
run key, instructions down; the site's identity up), ``metrics`` (numbers up, with
``num-examples``) and ``predictions`` (subject ids and probabilities up, evaluate only).
"""

from __future__ import annotations

from flwr.app import MessageType

HELLO = f"{MessageType.QUERY}.hello"
HEAD_MOMENTS = f"{MessageType.QUERY}.head_moments"

ARRAYS, CONFIG, METRICS, PREDICTIONS = "arrays", "config", "metrics", "predictions"
NUM_EXAMPLES = "num-examples"
# a hello that also asks for round 0's head moments (of every site but the hold-out one)
WITH_HEAD_MOMENTS, HOLDOUT_KEY = "with-head-moments", "holdout"
VALIDATE_KEY = "validate"          # train instruction: the previous round's validation requests
SELECTION_KEY = "selection"        # evaluate instruction: how the site picks between candidates
SAME_PAYLOAD = -2                  # a request's payload index meaning "this message's arrays"
CLIPPING_NORM_KEY = "clipping_norm"  # the config key Flower's fixedclipping_mod reads
