"""The memory plan of a benchmark run, from its command line (shared by train.py, memory.py, sample.py)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from recapture.config import DEFAULT_MEMORY, MEMORY_PLANS, MemoryPlan, memory_plan


def add_memory_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--memory", choices=list(MEMORY_PLANS), default=DEFAULT_MEMORY,
                        help="the memory plan (recapture.config.MEMORY_PLANS)")
    parser.add_argument("--keep-from-flops", type=lambda v: None if v == "none" else int(v), default=argparse.SUPPRESS,
                        help="override the plan's keep_outputs_from_flops: keep outputs this costly to recompute, "
                             "in FLOPs per element ('none': recompute everything)")


def memory_from_args(args: argparse.Namespace) -> MemoryPlan:
    plan = memory_plan(args.memory)
    if not hasattr(args, "keep_from_flops"):  # not given: the plan's own
        return plan
    return replace(plan, keep_outputs_from_flops=args.keep_from_flops)


def describe(args: argparse.Namespace) -> str:
    return f"memory plan {args.memory}, kept from {memory_from_args(args).keep_outputs_from_flops} FLOPs"
