"""The training strategies as small declarative objects.

A strategy says which parameter groups a client trains, which of them it uploads (the rest stay
private on the client), and how the server combines uploads (a sample-weighted mean). It holds no
model and no data, so the in-process loop (``duallora.federated.loop``) and the Flower apps
(``duallora.flower``) use the very same objects.

Parameter groups (see ``parameter_group``): ``global.A``/``global.B`` and ``local.A``/``local.B``
are LoRA factors of the named adapters, ``head`` the classification heads, ``block`` the full
weights of the adapted blocks (only ``fedavg_full`` trains those), ``fusion`` the frame fusion
and ``stem`` the first conv (both exist only under the matching ``frames`` model option, see
``duallora.model.frames``; every strategy trains them, and shares them wherever there is a
server that averages, like the global adapter), ``router`` FedALT's per-layer mixers
(``duallora.federated.fedalt``), ``frozen`` everything else.

Three fields say *how* a client trains and predicts, beyond what: ``schedule`` (one joint
optimization of every trainable group, or FedDPA's private-then-shared phases), ``mixing`` (the
active adapters add up, or FedDPA's instance-wise weights at inference) and ``finetune`` (the
personalized test model is the selected global model fine-tuned on the site). Two say what
the server does and what else trains: ``aggregation`` (one mean for everyone, or FedALT's
per-client leave-one-out mean, sent back under other names: ``received``) and ``penalty``
(the orthogonality term of orthogonal dual LoRA, ``duallora.federated.orthogonal``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import torch

from duallora.base.config import STRATEGY_ALIASES, STRATEGY_NAMES
from duallora.errors import KitError
from duallora.federated.serialization import Payload
from duallora.model.frames import FUSION_PREFIX

GLOBAL_A, GLOBAL_B, LOCAL_A, LOCAL_B = "global.A", "global.B", "local.A", "local.B"
HEAD, BLOCK, FROZEN = "head", "block", "frozen"
FUSION, STEM = "fusion", "stem"  # frames="per-frame" / "trainable-stem" only (else empty)
ROUTER = "router"  # FedALT's learned per-layer mixers (``duallora.federated.fedalt``)
FRAME_GROUPS = frozenset({FUSION, STEM})
# schedule: JOINT trains every trainable group together; PRIVATE_THEN_SHARED (FedDPA-T) trains
# the private groups first, with the shared adapters frozen and mixed in, then the shared groups
# alone (the private adapter switched off); the first round trains the shared groups only
JOINT, PRIVATE_THEN_SHARED = "joint", "private-then-shared"
# mixing: SUM adds the active adapters' updates; INSTANCE weights global and private adapter
# per test instance (FedDPA's instance-wise dynamic weighting, ``duallora.federated.dpa``)
# ROUTER_MIX: a learned router weighs the two adapters per token in every adapted layer (FedALT)
SUM, INSTANCE, ROUTER_MIX = "sum", "instance", "router"
# aggregation: MEAN sends every client the sample-weighted mean of the uploads; LEAVE_ONE_OUT
# sends each client the plain mean of the *other* clients' latest uploads (FedALT's
# rest-of-world adapter), renamed from the uploaded adapter to the received one
MEAN, LEAVE_ONE_OUT = "mean", "leave-one-out"
# penalty: ORTHOGONAL adds the global/local subspace-overlap term to the task loss
ORTHOGONAL = "orthogonal"


@dataclass(frozen=True)
class Strategy:
    """What a client trains and shares, and how the server aggregates: data, not code.

    Every behaviour that differs between strategies is a field here, so the loop, the clients,
    the export and the Flower apps never test a strategy's name.
    """

    name: str
    adapters: tuple[str, ...]       # LoRA adapters attached (and active) on every client
    trainable: frozenset[str]       # parameter groups the client optimizes
    shared: frozenset[str]          # groups uploaded and averaged (subset of trainable)
    federated: bool = True          # False: no server at all (each client alone)
    pooled: bool = False            # True: one client holding every site's data (centralized)
    global_adapters: tuple[str, ...] | None = None  # active in the global-only model
    private_adapter: str | None = None  # the adapter that never leaves the site (exported
    #                                     per site by the final export)
    private_rank: bool = False      # the private adapter takes --local-rank/--local-alpha
    schedule: str = JOINT           # JOINT or PRIVATE_THEN_SHARED (see above)
    mixing: str = SUM               # SUM, INSTANCE or ROUTER_MIX (see above)
    finetune: bool = False          # the final personalized model: the selected global payload
    #                                 fine-tuned on the site's training data (never uploaded)
    aggregation: str = MEAN         # MEAN or LEAVE_ONE_OUT (see above)
    received: frozenset[str] | None = None  # groups the server sends (None: ``shared``)
    penalty: str | None = None      # None or ORTHOGONAL (see above)
    description: str = ""

    @property
    def private(self) -> frozenset[str]:
        """Trained groups that never leave the client."""
        return self.trainable - self.shared

    @property
    def received_groups(self) -> frozenset[str]:
        """Groups the server sends a client (the averaged shared groups, unless declared)."""
        return self.shared if self.received is None else self.received

    @property
    def kept(self) -> frozenset[str]:
        """Trained groups a client carries from one round to the next (its private state):
        everything it trains that the server does not send back. Equal to ``private`` unless
        an uploaded group is never returned (FedALT's individual adapter)."""
        return self.trainable - self.received_groups

    @property
    def global_model_adapters(self) -> tuple[str, ...]:
        """Adapters active in the global-only model (default: all of them)."""
        return self.adapters if self.global_adapters is None else self.global_adapters

    @property
    def has_global_model(self) -> bool:
        """Whether the shared parts alone make a usable model (evaluated on every vendor).

        True when there is a server (or pooled data) and nothing the global-only forward pass
        needs is private: the global adapters' factors, the head, any trained block, the frame
        groups.
        """
        needed = {HEAD, BLOCK} | FRAME_GROUPS | {
            f"{name}.{factor}" for name in self.global_model_adapters for factor in ("A", "B")}
        return (self.federated or self.pooled) and not (self.private & needed)

    def aggregate(self, uploads: Sequence[tuple[Payload, int]]) -> Payload:
        """Sample-weighted mean of the uploads (FedAvg), key by key, in float64."""
        return weighted_average(uploads)


def weighted_average(uploads: Sequence[tuple[Payload, int]]) -> Payload:
    """``sum_k n_k p_k / sum_k n_k`` per tensor name; every upload must carry the same keys."""
    if not uploads:
        raise ValueError("nothing to aggregate")
    keys = sorted(uploads[0][0])
    for payload, _ in uploads[1:]:
        if sorted(payload) != keys:
            raise ValueError("uploads carry different parameter names; cannot average them")
    total = float(sum(n for _, n in uploads))
    if total <= 0:
        raise ValueError("aggregation weights (sample counts) must be positive")
    averaged: Payload = {}
    for key in keys:
        acc = torch.zeros_like(uploads[0][0][key], dtype=torch.float64)
        for payload, n in uploads:
            acc += payload[key].to(torch.float64) * (n / total)
        averaged[key] = acc.to(uploads[0][0][key].dtype)
    return averaged


def parameter_group(name: str, adapted_blocks: Iterable[int], head_names: Iterable[str],
                    stem_names: Iterable[str] = ()) -> str:
    """Which group a parameter of the (PEFT-wrapped) model belongs to, from its name alone
    (``stem_names``: the model's ``stem_parameter_names()``, empty unless the stem trains)."""
    if ".fedalt_router." in name:  # checked first: the routers live inside adapted blocks
        return ROUTER
    for adapter in ("global", "local"):
        if f".lora_A.{adapter}." in name:
            return f"{adapter}.A"
        if f".lora_B.{adapter}." in name:
            return f"{adapter}.B"
    bare = name.removeprefix("base_model.model.")
    if bare in set(head_names):
        return HEAD
    if bare.startswith(FUSION_PREFIX):
        return FUSION
    if bare in set(stem_names):
        return STEM
    prefixes = tuple(f"encoder.blocks.{block}." for block in adapted_blocks)
    if bare.startswith(prefixes):
        return BLOCK
    return FROZEN


def _lora(*groups: str) -> frozenset[str]:
    return frozenset(groups)


# One Strategy per name of config.STRATEGY_NAMES (the one list of names, which TrainConfig
# checks --strategy against without importing torch); the check below keeps the two in step.
_TABLE: tuple[Strategy, ...] = (
    Strategy(
        "single_site", ("local",), _lora(LOCAL_A, LOCAL_B, HEAD), frozenset(), federated=False,
        private_adapter="local",
        description="each vendor trains its own LoRA and head alone; nothing is exchanged"),
    Strategy(
        "centralized", ("global",), _lora(GLOBAL_A, GLOBAL_B, HEAD),
        _lora(GLOBAL_A, GLOBAL_B, HEAD), federated=False, pooled=True,
        description="one LoRA trained on the pooled data of every vendor (not private)"),
    Strategy(
        "fedavg_full", (), _lora(BLOCK, HEAD), _lora(BLOCK, HEAD),
        description="every weight of the adapted blocks and the head trained and averaged"),
    Strategy(
        "fedavg_lora", ("global",), _lora(GLOBAL_A, GLOBAL_B, HEAD),
        _lora(GLOBAL_A, GLOBAL_B, HEAD),
        description="FedIT: LoRA A and B and the head averaged"),
    Strategy(
        "ffa_lora", ("global",), _lora(GLOBAL_B, HEAD), _lora(GLOBAL_B, HEAD),
        description="A frozen at a shared random init; B and the head trained and averaged"),
    Strategy(
        "fedsa_lora", ("global",), _lora(GLOBAL_A, GLOBAL_B, HEAD), _lora(GLOBAL_A),
        description="A shared and averaged; B and the head stay on the client"),
    Strategy(
        "med_duallora", ("global", "local"), _lora(GLOBAL_A, GLOBAL_B, LOCAL_A, LOCAL_B, HEAD),
        _lora(GLOBAL_A, GLOBAL_B, HEAD), global_adapters=("global",), private_adapter="local",
        private_rank=True,
        description="global adapter and head averaged; the local adapter never leaves the site"),
    Strategy(
        "fedper", ("global",), _lora(GLOBAL_A, GLOBAL_B, HEAD), _lora(GLOBAL_A, GLOBAL_B),
        description="FedPer: LoRA A and B averaged; the head stays on the site "
                    "(= fedavg_lora --head private)"),
    Strategy(
        "fedavg_lora_ft", ("global",), _lora(GLOBAL_A, GLOBAL_B, HEAD),
        _lora(GLOBAL_A, GLOBAL_B, HEAD), finetune=True,
        description="FedAvg-LoRA, then each site fine-tunes the selected global adapter and "
                    "head on its own data (--finetune-epochs, optional --prox-lambda)"),
    Strategy(
        "feddpa", ("global", "local"), _lora(GLOBAL_A, GLOBAL_B, LOCAL_A, LOCAL_B, HEAD),
        _lora(GLOBAL_A, GLOBAL_B, HEAD), global_adapters=("global",), private_adapter="local",
        private_rank=True, schedule=PRIVATE_THEN_SHARED, mixing=INSTANCE,
        description="FedDPA-T: local adapter trained against the frozen global one, then the "
                    "global adapter and head alone (averaged); instance-wise weights at test"),
    Strategy(
        "orthogonal_duallora", ("global", "local"),
        _lora(GLOBAL_A, GLOBAL_B, LOCAL_A, LOCAL_B, HEAD), _lora(GLOBAL_A, GLOBAL_B, HEAD),
        global_adapters=("global",), private_adapter="local", private_rank=True,
        penalty=ORTHOGONAL,
        description="Med-DualLoRA plus a penalty on the overlap of the global and local "
                    "adapters' input subspaces (FedOPAL-style orthogonal dual LoRA)"),
    Strategy(
        "fedalt", ("global", "local"), _lora(LOCAL_A, LOCAL_B, HEAD, ROUTER),
        _lora(LOCAL_A, LOCAL_B), received=_lora(GLOBAL_A, GLOBAL_B), private_adapter="local",
        mixing=ROUTER_MIX, aggregation=LEAVE_ONE_OUT,
        description="FedALT: each site's individual LoRA is uploaded but never replaced; the "
                    "server returns the frozen mean of the other sites' (rest-of-world) "
                    "adapter; a per-layer router mixes the two; head and router stay on site"),
)


def _with_frame_groups(strategy: Strategy) -> Strategy:
    """Every strategy trains the frame groups; they travel wherever there is a server that
    averages (or pooled data), as the global adapter does, and stay on the site otherwise
    (``single_site``; FedALT, whose server returns no mean of them)."""
    shares = (strategy.federated or strategy.pooled) and strategy.aggregation == MEAN
    return replace(strategy, trainable=strategy.trainable | FRAME_GROUPS,
                   shared=strategy.shared | FRAME_GROUPS if shares else strategy.shared)


_STRATEGIES = {strategy.name: _with_frame_groups(strategy) for strategy in _TABLE}
if tuple(_STRATEGIES) != STRATEGY_NAMES:
    raise RuntimeError(f"strategies.py defines {tuple(_STRATEGIES)}, config.STRATEGY_NAMES "
                       f"lists {STRATEGY_NAMES}: declare a new strategy in both, in one order")


def get_strategy(name: str, head: str = "shared") -> Strategy:
    """The strategy called ``name``; ``head='private'`` keeps the head on the site (an
    ablation; ``'local'`` is its deprecated alias)."""
    name = STRATEGY_ALIASES.get(name, name)
    if name not in _STRATEGIES:
        raise KitError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGY_NAMES)}")
    strategy = _STRATEGIES[name]
    if head in ("private", "local") and HEAD in strategy.shared:
        strategy = replace(strategy, shared=strategy.shared - {HEAD})
    return strategy


def all_strategies() -> list[Strategy]:
    return [get_strategy(name) for name in STRATEGY_NAMES]
