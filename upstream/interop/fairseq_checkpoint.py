"""Reading fairseq-family checkpoint files safely (no fairseq needed): the fairseq format, S3PRL's
converted format, and the original WavLM release, each as (model config, task config, weights).

* **fairseq**: ``{"cfg": {"model": ..., "task": ...}, "model": state}`` (newer, an OmegaConf
  ``DictConfig``) or ``{"args": Namespace, "model": state}`` (older); a fine-tuned CTC model
  (``wav2vec_ctc``) holds its pre-trained network under ``w2v_encoder.w2v_model.`` with that
  network's config in ``w2v_args``, and is read as that network;
* **S3PRL** (its converted checkpoints): ``{"task_cfg", "model_cfg", "model_weight", ...}``; the
  weights keep fairseq's names;
* **WavLM** (Microsoft's release, what S3PRL's WavLM expert loads): ``{"cfg": dict, "model": state}``
  with fairseq's names plus the gated relative position bias.
"""
from __future__ import annotations

import argparse
import ast
import collections
import operator
import pickle
import typing
from pathlib import Path

import torch

from .s3prl_checkpoint import checkpoint_error


def parse_conv_layers(spec: str) -> list[list[int]]:
    """fairseq's ``conv_feature_layers`` string, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"``, without eval."""
    layers: list[list[int]] = []
    try:
        for term in spec.split("+"):
            literal, _, times = term.partition("*")
            value = ast.literal_eval(literal.strip())
            layers += [list(v) for v in value] * (int(times) if times.strip() else 1)
    except (ValueError, SyntaxError, TypeError) as e:
        raise ValueError(f"cannot read conv_feature_layers {spec!r}: {e}") from None
    return layers


def as_dict(cfg) -> dict:
    """An OmegaConf node, a Namespace or a dict -> plain dict."""
    if cfg is None:
        return {}
    if isinstance(cfg, argparse.Namespace):
        return vars(cfg)
    if isinstance(cfg, dict):
        return cfg
    from omegaconf import OmegaConf  # noqa: PLC0415  (OmegaConf configs only)

    return OmegaConf.to_container(cfg, resolve=True)


def _safe_globals() -> list:
    """What fairseq and S3PRL checkpoints pickle besides tensors: configs (Namespace or OmegaConf)."""
    allowed = [argparse.Namespace, collections.defaultdict, typing.Any, dict, list, tuple, int, float, str, bool,
               operator.getitem, typing.Tuple, typing.List, typing.Dict, typing.Optional, typing.Union,
               (Ellipsis, "builtins.Ellipsis")]
    try:
        import omegaconf  # noqa: PLC0415  (may be absent: then no OmegaConf classes)
        from omegaconf import base, nodes  # noqa: PLC0415  (may be absent, as above)

        allowed += [omegaconf.DictConfig, omegaconf.ListConfig, base.ContainerMetadata, base.Metadata,
                    nodes.AnyNode, nodes.StringNode, nodes.IntegerNode, nodes.FloatNode, nodes.BooleanNode,
                    nodes.EnumNode]
        allowed += [getattr(omegaconf, name) for name in ("TupleConfig",) if hasattr(omegaconf, name)]
    except ImportError:
        pass
    return allowed


def torch_load_safely(path: Path, kind: str) -> dict:
    """The checkpoint dict at ``path``, unpickling nothing but tensors and configs; errors name the file."""
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln), str(e).splitlines()[0])
        raise checkpoint_error(path, f"not a {kind} checkpoint this toolkit can read safely ({detail})") from None
    except Exception as e:  # noqa: BLE001  (re-raised: any failure to load becomes the one error naming the file)
        raise checkpoint_error(path, f"not a torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict):
        raise checkpoint_error(path, f"expected a dict, found {type(ckpt).__name__}")
    return ckpt


def read_fairseq_checkpoint(path: Path, kind: str) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(model config, task config, weights with fairseq's names) of a checkpoint in one of the formats
    of the module docstring; ``kind`` (e.g. "HuBERT") names what was expected in errors."""
    ckpt = torch_load_safely(path, kind)
    if {"model_cfg", "model_weight"} <= ckpt.keys():  # S3PRL
        model_cfg, task_cfg, state = as_dict(ckpt["model_cfg"]), as_dict(ckpt.get("task_cfg")), ckpt["model_weight"]
    elif "model" in ckpt and ("cfg" in ckpt or "args" in ckpt):  # fairseq, WavLM's release
        if ckpt.get("cfg") is not None:
            cfg = as_dict(ckpt["cfg"])
            if "model" in cfg:
                model_cfg, task_cfg = as_dict(cfg.get("model")), as_dict(cfg.get("task"))
            else:  # WavLM: the model config itself
                model_cfg, task_cfg = cfg, {"normalize": cfg.get("normalize", False)}
        else:
            model_cfg = task_cfg = as_dict(ckpt["args"])
        state = ckpt["model"]
    else:
        raise checkpoint_error(path, f"neither a fairseq nor an S3PRL {kind} checkpoint (keys: {sorted(ckpt)[:8]})")
    if "w2v_args" in model_cfg and any(k.startswith("w2v_encoder.w2v_model.") for k in state):  # fine-tuned CTC
        inner = as_dict(model_cfg["w2v_args"])
        if not inner:
            raise checkpoint_error(path, "a fine-tuned model without its pre-trained network's config (w2v_args)")
        model_cfg, task_cfg = as_dict(inner.get("model", inner)), as_dict(inner.get("task", task_cfg))
        prefix = "w2v_encoder.w2v_model."
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return model_cfg, task_cfg, state
