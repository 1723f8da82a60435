"""Search over the speech-translation head's incremental decoder: batched greedy and beam search.

Both decode every utterance of a batch at once, one :meth:`~downstream.heads.seq2seq.S2TTransformer.decode_step` per
position, and return the pieces of each utterance without BOS and EOS.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..heads.seq2seq import S2TTransformer
from .subwords import BOS, EOS, PAD


def _until_eos(ids: list[int]) -> list[int]:
    return ids[: ids.index(EOS)] if EOS in ids else ids


@torch.no_grad()
def greedy(head: S2TTransformer, memory: torch.Tensor, memory_len: torch.Tensor,
           max_len: int) -> list[list[int]]:
    """Batched argmax decoding of ``memory`` (B, S, d_model) with (B,) valid lengths ``memory_len``,
    at most ``max_len`` steps -> pieces per utterance (without BOS/EOS)."""
    b = memory.shape[0]
    prev = torch.full((b, 1), BOS, dtype=torch.long, device=memory.device)
    done = torch.zeros(b, dtype=torch.bool, device=memory.device)
    cache = None
    for _ in range(max_len):
        logits, cache = head.decode_step(memory, memory_len, prev[:, -1], cache)
        nxt = logits.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        prev = torch.cat([prev, nxt[:, None]], dim=1)
        done |= nxt == EOS
        if bool(done.all()):
            break
    return [_until_eos(row[1:]) for row in prev.tolist()]


@torch.no_grad()
def beam_search(head: S2TTransformer, memory: torch.Tensor, memory_len: torch.Tensor, beam_size: int,
                max_len: int, length_penalty: float = 1.0) -> list[list[int]]:
    """Beam search over the whole batch at once -> pieces per utterance (without BOS/EOS).

    Each utterance keeps ``beam_size`` open hypotheses (B * K decoder rows, one incremental
    step each); a hypothesis ends at EOS and scores log-prob / (length + 1) ** length_penalty.
    An utterance is done once it has ``beam_size`` ended hypotheses or no open one is left; without
    any ended by ``max_len`` steps, its best open one is taken. The result of an utterance does not
    depend on the rest of the batch (tested).
    """
    b, k, device = memory.shape[0], beam_size, memory.device
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live hypothesis (BOS) per utterance to start
    prefixes = [[[BOS] for _ in range(k)] for _ in range(b)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    done = [False] * b
    last = torch.full((b * k,), BOS, dtype=torch.long, device=device)
    cache = None
    for _ in range(max_len):
        logits, cache = head.decode_step(memory, memory_len, last, cache, beams=k)
        logp = F.log_softmax(logits, dim=-1)
        vocab = logp.shape[1]
        cand = (scores[:, :, None] + logp.view(b, k, vocab)).view(b, k * vocab)
        top_scores, top = cand.topk(min(2 * k, k * vocab), dim=1)
        new_scores = torch.full((b, k), float("-inf"), device=device)
        origins = torch.arange(b * k, device=device)
        tokens = torch.full((b * k,), PAD, dtype=torch.long, device=device)
        new_prefixes = [list(p) for p in prefixes]
        for u in range(b):
            if done[u]:
                continue
            kept = 0
            for score, flat in zip(top_scores[u].tolist(), top[u].tolist(), strict=True):
                if score == float("-inf"):
                    break
                beam, token = divmod(flat, vocab)
                if token == EOS:
                    hyp = prefixes[u][beam][1:]
                    finished[u].append((score / (len(hyp) + 1) ** length_penalty, hyp))
                else:
                    new_prefixes[u][kept] = prefixes[u][beam] + [token]
                    new_scores[u, kept] = score
                    origins[u * k + kept] = u * k + beam
                    tokens[u * k + kept] = token
                    kept += 1
                if kept == k:
                    break
            if len(finished[u]) >= k or kept == 0:
                done[u] = True
        if all(done):
            break
        prefixes, scores, last = new_prefixes, new_scores, tokens
        cache.reorder(origins)
    out = []
    for u in range(b):
        if not finished[u]:  # none ended within max_len: the best open hypothesis
            best = int(scores[u].argmax())
            finished[u] = [(0.0, prefixes[u][best][1:])]
        out.append(max(finished[u], key=lambda f: f[0])[1])
    return out
