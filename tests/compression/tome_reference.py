"""ToMe written independently of tokcomp_edge, from Bolya et al. (ICLR 2023) and the steps of
facebookresearch/ToMe (`bipartite_soft_matching`, `merge_wavg`, `tome.patch.timm` with prop_attn=True):
explicit softmax attention with log(size) added to the logits, keys averaged over heads as the metric,
A = even / B = odd positions, `scatter_reduce(sum)` for the size-weighted average, output cat(unmerged A,
B). Membership of every token is tracked as Python sets of patch ids.

Output order: ToMe re-sorts the unmerged A tokens into their original order only when it protects a CLS
token; without one they stay in match-score rank order (`published_order=True` here). tokcomp always
re-sorts them (issue 15: rank order made the output depend on near-tied scores, which ONNX Runtime and
PyTorch rank differently), and so does this reference by default — the order decides the next block's A/B
split, so with several merging blocks only the same order rule gives the same merges. Within one merging
block the order is irrelevant (attention and the MLP are permutation-equivariant): the tests compare
tokcomp against `published_order=True` as sets of (patches, token) there (tests/encoders/test_tome_tower.py).

Protection (tokcomp's rule, a superset of ToMe's CLS-only one): every prefix token is neither merged nor
absorbs a merge; after each merge the prefix tokens are moved back to the front in their original order,
found by their membership (not by a formula).
"""

from __future__ import annotations

import math

import torch


def attention(q, k, v, scale, size):
    """q, k, v [B, H, T, d]; size [B, T] or None. Explicit softmax(q·kᵀ·scale + log size)·v."""
    logits = (q @ k.transpose(-1, -2)) * scale
    if size is not None:
        logits = logits + size.log()[:, None, None, :]
    return logits.softmax(dim=-1) @ v


def merge_step(x, size, members, keys, r, protected, published_order=False):
    b, t, c = x.shape
    metric = keys / keys.norm(dim=-1, keepdim=True)
    a, bb = metric[:, ::2], metric[:, 1::2]
    scores = a @ bb.transpose(1, 2)
    for i in range(protected):
        if i % 2 == 0:
            scores[:, i // 2, :] = -math.inf
        else:
            scores[:, :, i // 2] = -math.inf
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = torch.sort(node_max, dim=-1, descending=True, stable=True).indices
    unm_idx, src_idx = edge_idx[:, r:], edge_idx[:, :r]
    if protected or not published_order:
        unm_idx = unm_idx.sort(dim=1).values
    dst_idx = node_idx.gather(1, src_idx)

    def merge(v):
        src, dst = v[:, ::2], v[:, 1::2]
        n, _, ch = src.shape
        unm = src.gather(1, unm_idx[..., None].expand(n, -1, ch))
        moved = src.gather(1, src_idx[..., None].expand(n, -1, ch))
        dst = dst.scatter_reduce(1, dst_idx[..., None].expand(n, -1, ch), moved, reduce="sum")
        return torch.cat([unm, dst], dim=1)

    new_x = merge(x * size[..., None])
    new_size = merge(size[..., None])[..., 0]
    new_x = new_x / new_size[..., None]
    new_members = []
    for i in range(b):
        a_sets, b_sets = members[i][::2], [set(s) for s in members[i][1::2]]
        for s_i, d_i in zip(src_idx[i].tolist(), dst_idx[i].tolist()):
            b_sets[d_i] |= a_sets[s_i]
        new_members.append([set(a_sets[j]) for j in unm_idx[i].tolist()] + b_sets)
    # prefix tokens back to the front, in order: find them by membership
    for i in range(b):
        order = [next(j for j, s in enumerate(new_members[i]) if s == {-1 - p}) for p in range(protected)]
        rest = [j for j in range(len(new_members[i])) if j not in order]
        perm = order + rest
        new_x[i] = new_x[i, perm]
        new_size[i] = new_size[i, perm]
        new_members[i] = [new_members[i][j] for j in perm]
    return new_x, new_size, new_members


def tome_reference(x, blocks, schedule, protected, final=None, published_order=False):
    """x: embedded tokens [B, T, C]; blocks: per block (attn_fn(x, size | None) -> (Δx, keys [B, T, d]),
    mlp_fn(x) -> Δx) as the block computes them (norms, LayerScale inside); published_order: ToMe's own
    output order without a protected token (unmerged A in rank order; see the module docstring).
    Returns (tokens, sizes [B, T_out], merge map [B, N] int64: output row of each patch)."""
    b, t, _ = x.shape
    size = torch.ones(b, t, dtype=x.dtype)
    members = [[{-1 - p} for p in range(protected)] + [{j} for j in range(t - protected)] for _ in range(b)]
    merged = False
    for (attn_fn, mlp_fn), r in zip(blocks, schedule):
        dx, keys = attn_fn(x, size if merged else None)
        x = x + dx
        if r:
            x, size, members = merge_step(x, size, members, keys, r, protected, published_order)
            merged = True
        x = x + mlp_fn(x)
    if final is not None:
        x = final(x)
    n = t - protected
    mmap = torch.full((b, n), -1, dtype=torch.int64)
    for i in range(b):
        for row, s in enumerate(members[i]):
            for j in s:
                if j >= 0:
                    mmap[i, j] = row
    return x, size, mmap


# --- the same blocks, taken from the tower's own modules, for the reference above ---------------


def heads(t, h):
    b, n, c = t.shape
    return t.reshape(b, n, h, c // h).transpose(1, 2)


def merge_heads(o):
    b, h, n, d = o.shape
    return o.transpose(1, 2).reshape(b, n, h * d)


def timm_block_fns(blk):
    a = blk.attn

    def attn_fn(x, size):
        h = blk.norm1(x)
        b, t, _ = h.shape
        q, k, v = a.qkv(h).reshape(b, t, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        q, k = a.q_norm(q), a.k_norm(k)
        o = merge_heads(attention(q, k, v, a.scale, size))
        return blk.ls1(a.proj(a.norm(o))), k.mean(dim=1)

    return attn_fn, lambda x: blk.ls2(blk.mlp(blk.norm2(x)))


def hf_block_fns(blk):
    if hasattr(blk, "lambda_1"):  # InternViT: q/k RMSNorm over the full width, LayerScale as bare parameters
        a = blk.attention

        def attn_fn(x, size):
            h = blk.layernorm_before(x)
            q = heads(a.q_norm(a.q_proj(h)), a.num_heads)
            k = heads(a.k_norm(a.k_proj(h)), a.num_heads)
            v = heads(a.v_proj(h), a.num_heads)
            return blk.lambda_1 * a.projection_layer(merge_heads(attention(q, k, v, a.scale, size))), k.mean(dim=1)

        return attn_fn, lambda x: blk.lambda_2 * blk.mlp(blk.layernorm_after(x))
    if hasattr(blk, "self_attn"):  # CLIP, SigLIP
        a, n1, n2, out, nh, scale = blk.self_attn, blk.layer_norm1, blk.layer_norm2, blk.self_attn.out_proj, \
            blk.self_attn.num_heads, blk.self_attn.scale
        ls1 = ls2 = torch.nn.Identity()
    else:  # DINOv2 (LayerScale), ViT
        a = blk.attention
        n1 = getattr(blk, "norm1", None) or blk.layernorm_before
        n2 = getattr(blk, "norm2", None) or blk.layernorm_after
        out, nh, scale = a.o_proj, a.num_attention_heads, a.scaling
        ls1 = getattr(blk, "layer_scale1", torch.nn.Identity())
        ls2 = getattr(blk, "layer_scale2", torch.nn.Identity())

    def attn_fn(x, size):
        h = n1(x)
        q, k, v = heads(a.q_proj(h), nh), heads(a.k_proj(h), nh), heads(a.v_proj(h), nh)
        return ls1(out(merge_heads(attention(q, k, v, scale, size)))), k.mean(dim=1)

    return attn_fn, lambda x: ls2(blk.mlp(n2(x)))


def reference_for(enc, x, schedule, published_order=False):
    tower = enc.tower
    fns = timm_block_fns if enc.spec.source == "timm" else hf_block_fns
    blocks = [fns(tower.blocks[i]) for i in range(tower.num_used)]
    with torch.no_grad():
        emb = tower.embed(x)
        return tome_reference(emb, blocks, schedule, enc.spec.prefix_tokens,
                              tower.final_norm if tower.apply_final_norm else None, published_order)
