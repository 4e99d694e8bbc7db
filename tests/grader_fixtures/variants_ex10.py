"""Other students' answers to exercise 10 (pruning a language model); see variants.py for the idea."""

from __future__ import annotations

from variants import Variant

EX10 = "ex10_llm_pruning"

# boolean masks over heads; new layers built and copied into; hooks on the blocks for the stream;
# a fresh TinyLlama loaded with renamed state-dict keys; a Python loop over groups with sorted()
EX10_MASKS_HOOKS = {
    "remove_kv_heads": """\
def remove_kv_heads(attn, drop):
    d = attn.head_dim
    n_q, n_kv = attn.q_proj.weight.shape[0] // d, attn.k_proj.weight.shape[0] // d
    if any(j not in range(n_kv) for j in drop) or len(set(drop)) == n_kv:
        raise ValueError("bad KV heads")
    kv_alive = torch.ones(n_kv, dtype=torch.bool)
    kv_alive[list(drop)] = False
    q_alive = kv_alive.repeat_interleave(n_q // n_kv)          # query head h belongs to KV head h // g
    q_feat, kv_feat = q_alive.repeat_interleave(d), kv_alive.repeat_interleave(d)
    new = copy.deepcopy(attn)
    for name, rows in (("q_proj", q_feat), ("k_proj", kv_feat), ("v_proj", kv_feat)):
        old = getattr(attn, name).weight
        layer = nn.Linear(old.shape[1], int(rows.sum()), bias=False)
        with torch.no_grad():
            layer.weight.copy_(old[rows])
        setattr(new, name, layer)
    o = nn.Linear(int(q_feat.sum()), attn.o_proj.weight.shape[0], bias=False)
    with torch.no_grad():
        o.weight.copy_(attn.o_proj.weight[:, q_feat])
    new.o_proj = o
    return new""",
    "block_influence": """\
def block_influence(model, idx):
    seen = []
    hooks = [b.register_forward_hook(lambda mod, args, out: seen.append((args[0].detach(), out.detach())))
             for b in model.blocks]
    try:
        with torch.no_grad():
            model(idx)
    finally:
        for h in hooks:
            h.remove()
    values = []
    for a, b in seen:
        a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        cos = (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1)
        values.append(1.0 - cos.mean())
    return torch.stack(values)""",
    "drop_blocks": """\
def drop_blocks(model, blocks):
    n = model.config.n_layers
    if not set(blocks) <= set(range(n)) or len(set(blocks)) == n:
        raise ValueError("no such block, or none left")
    kept = [i for i in range(n) if i not in set(blocks)]
    cfg = LlamaConfig(**{**model.config.__dict__, "n_layers": len(kept)})
    new = TinyLlama(cfg)
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("blocks."):
            _, i, rest = key.split(".", 2)
            if int(i) not in kept:
                continue
            key = f"blocks.{kept.index(int(i))}.{rest}"
        state[key] = value.clone()
    new.load_state_dict(state)
    return new.eval()""",
    "wanda_mask": """\
def wanda_mask(weight, norms, n=2, m=4):
    if weight.shape[1] % m != 0 or len(norms) != weight.shape[1]:
        raise ValueError("width or norms")
    out = torch.zeros(weight.shape, dtype=torch.bool)
    for r in range(weight.shape[0]):
        for s in range(0, weight.shape[1], m):
            scores = [(abs(float(weight[r, s + i])) * float(norms[s + i]), s + i) for i in range(m)]
            for _, col in sorted(scores, reverse=True)[:n]:
                out[r, col] = True
    return out""",
}

# index_select with one index list; einsum for the cosines; del on a deep copy; argsort of the scores
EX10_INDEX_SELECT = {
    "remove_kv_heads": """\
def remove_kv_heads(attn, drop):
    d = attn.head_dim
    g = attn.q_proj.out_features // attn.k_proj.out_features
    n_kv = attn.k_proj.out_features // d
    drop = sorted(set(drop))
    if drop and (drop[0] < 0 or drop[-1] >= n_kv) or len(drop) == n_kv:
        raise ValueError(drop)
    keep = [j for j in range(n_kv) if j not in drop]
    kv = torch.arange(n_kv * d).view(n_kv, d)[keep].flatten()
    q = torch.arange(n_kv * g * d).view(n_kv, g * d)[keep].flatten()
    new = copy.deepcopy(attn)
    for name, dim, index in (("q_proj", 0, q), ("k_proj", 0, kv), ("v_proj", 0, kv), ("o_proj", 1, q)):
        layer = getattr(new, name)
        layer.weight = nn.Parameter(layer.weight.detach().index_select(dim, index).clone())
        if dim == 0:
            layer.out_features = len(index)
        else:
            layer.in_features = len(index)
    return new""",
    "block_influence": """\
def block_influence(model, idx):
    cos, sin = model.rope(idx)
    h = model.embed(idx).detach()
    result = torch.empty(len(model.blocks))
    for i, block in enumerate(model.blocks):
        with torch.no_grad():
            nxt = block(h, cos, sin)
        dots = torch.einsum("btd,btd->bt", h, nxt)
        result[i] = 1 - (dots / (h.norm(dim=2) * nxt.norm(dim=2))).mean()
        h = nxt
    return result""",
    "drop_blocks": """\
def drop_blocks(model, blocks):
    from dataclasses import replace
    order = sorted(set(blocks), reverse=True)
    if not order:
        return copy.deepcopy(model)
    if order[-1] < 0 or order[0] >= len(model.blocks) or len(order) == len(model.blocks):
        raise ValueError(blocks)
    new = copy.deepcopy(model)
    for b in order:
        del new.blocks[b]
    new.config = replace(new.config, n_layers=len(new.blocks))
    return new""",
    "wanda_mask": """\
def wanda_mask(weight, norms, n=2, m=4):
    rows, cols = weight.shape
    if cols % m or norms.numel() != cols:
        raise ValueError("bad shapes")
    s = (weight.abs() * norms.view(1, -1)).view(rows, cols // m, m)
    rank = s.argsort(dim=2, descending=True).argsort(dim=2)     # 0 = the largest in its group
    return (rank < n).view(rows, cols)""",
}

# the query groups interleaved (query head h read as KV head h % n_kv), and the cosine of the whole
# flattened stream instead of per token
EX10_INTERLEAVED = {
    "remove_kv_heads": """\
def remove_kv_heads(attn, drop):
    d = attn.head_dim
    n_kv = attn.k_proj.out_features // d
    n_q = attn.q_proj.out_features // d
    if any(not 0 <= j < n_kv for j in drop) or len(set(drop)) == n_kv:
        raise ValueError(drop)
    keep_kv = [j for j in range(n_kv) if j not in drop]
    keep_q = [h for h in range(n_q) if h % n_kv in keep_kv]
    kv = torch.tensor([j * d + r for j in keep_kv for r in range(d)])
    q = torch.tensor([h * d + r for h in keep_q for r in range(d)])
    new = copy.deepcopy(attn)
    new.q_proj.weight = nn.Parameter(attn.q_proj.weight.detach()[q].clone())
    new.k_proj.weight = nn.Parameter(attn.k_proj.weight.detach()[kv].clone())
    new.v_proj.weight = nn.Parameter(attn.v_proj.weight.detach()[kv].clone())
    new.o_proj.weight = nn.Parameter(attn.o_proj.weight.detach()[:, q].clone())
    return new""",
    "block_influence": """\
def block_influence(model, idx):
    with torch.no_grad():
        cos, sin = model.rope(idx)
        x = model.embed(idx)
        out = []
        for block in model.blocks:
            y = block(x, cos, sin)
            out.append(1 - F.cosine_similarity(x.flatten(), y.flatten(), dim=0))
            x = y
    return torch.stack(out)""",
}

# blocks removed from the model it was given (no copy), and the groups of m taken along the OUTPUTS
EX10_IN_PLACE = {
    "drop_blocks": """\
def drop_blocks(model, blocks):
    import dataclasses
    if any(not 0 <= b < len(model.blocks) for b in blocks) or len(set(blocks)) >= len(model.blocks):
        raise ValueError(blocks)
    for b in sorted(set(blocks), reverse=True):
        del model.blocks[b]
    model.config = dataclasses.replace(model.config, n_layers=len(model.blocks))
    return model""",
    "wanda_mask": """\
def wanda_mask(weight, norms, n=2, m=4):
    if weight.shape[1] % m or norms.shape != (weight.shape[1],):
        raise ValueError("shapes")
    scores = (weight.abs() * norms).t().reshape(-1, m)           # groups of m outputs, per input
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.topk(n, dim=1).indices, True)
    return keep.reshape(weight.shape[1], weight.shape[0]).t()""",
}

VARIANTS_EX10 = {
    "ex10-masks-hooks-state-dict": Variant(EX10, EX10_MASKS_HOOKS,
                                           why="boolean head masks, forward hooks, a rebuilt model, Python loops"),
    "ex10-index-select-einsum": Variant(EX10, EX10_INDEX_SELECT,
                                        why="index_select, einsum, del on a deep copy, double argsort"),
    "ex10-interleaved-groups": Variant(EX10, EX10_INTERLEAVED, lost=("test_remove_kv_heads", "test_block_influence"),
                                       why="query head h read as KV head h % n_kv; one cosine of the whole stream"),
    "ex10-in-place-and-output-groups": Variant(EX10, EX10_IN_PLACE, lost=("test_drop_blocks", "test_wanda_mask"),
                                               strip_asserts=True,
                                               why="removes the blocks of the model it was given; groups of m "
                                                   "outputs instead of inputs (caught by the records alone)"),
}
