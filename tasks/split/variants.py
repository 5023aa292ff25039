"""Dataset variants beside the original split, as the athlete-profile study built them.

- `balanced`: equal counts per stratum by down-sampling, e.g. as many women as men in
  every age bin (`by: [gender], within: [age]`). Without `by`, every combination of the
  target and `split.stratify` gets the same count. Then a normal stratified, grouped split.
- `biased`: an attribute made to correlate with the target at a chosen strength: in the
  train and val sets, a share `strength` of each class's images carry the attribute value
  paired with that class (e.g. nurses female, engineers male). The images not used there,
  the *complement*, mostly counter-stereotypical ones, form the test set, so a model that
  learnt the shortcut instead of the target shows it there.

Selection always takes or leaves whole groups (same person, near-copies), so each
variant is as leak-free as the original. Images a variant cannot use (unknown attribute
values, strata with nothing to balance against) get no split in its column.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product
from typing import Any

import numpy as np
import pandas as pd

from tasks.core.recipe import BalancedVariant, BiasedVariant, Recipe
from tasks.core.binning import UNKNOWN, field_labels, target_classes
from tasks.split.assign import achieved, compose_groups, group_ids, ratios_of, split_frame, strata_labels, stratify_fields

MAX_ROUNDS = 20  # re-selections of the balanced variant before giving up on exact equality
SEP = "\x1f"  # joins block and cell labels in one key


def build(variant: BalancedVariant | BiasedVariant, rows: pd.DataFrame, recipe: Recipe
          ) -> tuple[pd.Series, dict[str, Any], list[str]]:
    """The split of each row the variant uses (index: those rows), its figures and warnings.

    `rows` come in item_id order (`assign.in_id_order`): the seeded draws run over groups
    numbered in row order."""
    if isinstance(variant, BalancedVariant):
        return balanced(variant, rows, recipe)
    return biased(variant, rows, recipe)


def _known(rows: pd.DataFrame, fields: list[str], recipe: Recipe) -> pd.Series:
    """Rows whose every listed field has a value (numbers binned against all `rows`)."""
    mask = pd.Series(True, index=rows.index)
    for field in fields:
        mask &= field_labels(rows, field, recipe, reference=rows) != UNKNOWN
    return mask


def _take_groups(groups: np.ndarray, cells: np.ndarray, quota: dict[str, int], seed: int) -> np.ndarray:
    """Whole groups, in a random order fixed by `seed`, while no cell goes over its quota
    (a group spanning cells must fit in all of them); returns a row mask."""
    if len(groups) == 0:
        return np.zeros(0, dtype=bool)
    codes, names = pd.factorize(pd.Series(cells, dtype=object))
    limit = np.array([quota.get(name, 0) for name in names])
    composed = compose_groups(groups, codes)
    filled = np.zeros_like(limit)
    taken = np.zeros(len(composed.sizes), dtype=bool)
    for g in np.random.default_rng(seed).permutation(len(taken)):
        strata, counts = composed.strata[g], composed.counts[g]
        if np.all(filled[strata] + counts <= limit[strata]):
            filled[strata] += counts
            taken[g] = True
    return taken[groups]


def _select(groups: np.ndarray, cells: np.ndarray, quota: dict[str, int], seed: int,
            settle: Callable[[pd.Series], dict[str, int] | None], notes: list[str]) -> np.ndarray:
    """Take groups up to the quotas; a group spanning cells can be refused for one cell and
    leave another short, so `settle` turns what each cell reached into new quotas (None when
    the composition is right) and the choice is made again."""
    for _ in range(MAX_ROUNDS):
        mask = _take_groups(groups, cells, quota, seed)
        reached = pd.Series(cells[mask], dtype=object).value_counts().reindex(list(quota), fill_value=0)
        quota = settle(reached)
        if quota is None:
            return mask
    notes.append(f"the composition could not be made exact with whole groups after {MAX_ROUNDS} rounds")
    return mask


def _split_chosen(rows: pd.DataFrame, fields: list[str], recipe: Recipe, ratios: dict[str, float],
                  notes: list[str]) -> tuple[pd.Series, pd.Series]:
    """The chosen rows' splits and strata; a note per class missing from a split."""
    strata = strata_labels(rows, fields, recipe, reference=rows)
    splits, missing = split_frame(rows, strata, ratios, recipe.split.seed, recipe.split.group_by,
                                  target_classes(rows, recipe))
    notes.extend(missing)
    return splits, strata


def balanced(variant: BalancedVariant, rows: pd.DataFrame, recipe: Recipe) -> tuple[pd.Series, dict[str, Any], list[str]]:
    """Down-sample so that every combination of `by` values has the same count inside each
    `within` block; blocks missing a combination are left out (named in the warnings)."""
    by = variant.by or stratify_fields(recipe)
    notes: list[str] = []
    usable = rows[_known(rows, by + variant.within, recipe)]
    if len(usable) < len(rows):
        notes.append(f"{len(rows) - len(usable)} images with an unknown {'/'.join(by + variant.within)} value left out")
    cell = strata_labels(usable, by, recipe, reference=rows)
    block = strata_labels(usable, variant.within, recipe, reference=rows)
    values = [sorted(field_labels(usable, f, recipe, reference=rows).unique()) for f in by]
    expected = [", ".join(f"{f}={v}" for f, v in zip(by, combo)) for combo in product(*values)]
    counts = pd.crosstab(block, cell).reindex(columns=expected, fill_value=0)
    quota: dict[str, int] = {}
    for name, row in counts.iterrows():
        smallest = int(row.min())
        if smallest == 0:
            missing = [c for c in expected if row[c] == 0]
            notes.append(f"{name}: no images for {'; '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}, so this block is left out")
        quota.update({f"{name}{SEP}{c}": smallest for c in expected})
    key = (block + SEP + cell).astype(str).to_numpy()

    def settle(reached: pd.Series) -> dict[str, int] | None:
        lowest = reached.groupby(lambda k: k.split(SEP)[0]).transform("min")
        return None if (reached == lowest).all() else lowest.to_dict()

    mask = _select(group_ids(usable, recipe.split.group_by), key, quota, recipe.split.seed, settle, notes)
    chosen = usable[mask]
    composition: dict[str, dict[str, int]] = {}
    for (b, c), n in pd.crosstab(block[chosen.index], cell[chosen.index]).stack().items():
        composition.setdefault(str(b), {})[str(c)] = int(n)
    fields = list(dict.fromkeys([*stratify_fields(recipe), *by, *variant.within]))
    splits, strata = _split_chosen(chosen, fields, recipe, ratios_of(recipe), notes)
    figures = {
        "by": by,
        "within": variant.within,
        "per_cell": {b: min(cells.values()) for b, cells in composition.items()},
        "composition": composition,
        **achieved(splits, strata, ratios_of(recipe)),
    }
    return splits, figures, notes


def _ranged(variant: BiasedVariant) -> bool:
    return any(isinstance(v, tuple) for v in variant.pairs.values())


def _aligned_by_value(variant: BiasedVariant, rows: pd.DataFrame, recipe: Recipe, target: pd.Series,
                      notes: list[str]) -> tuple[pd.Series, pd.Series, dict[str, Any]] | None:
    """Usable rows, whether each carries its class's paired attribute value (binned as the
    split bins it), and the pairs; None when no row has both values."""
    attribute = field_labels(rows, variant.attribute, recipe, reference=rows)
    usable = attribute != UNKNOWN
    if (~usable).any():
        notes.append(f"{int((~usable).sum())} images with an unknown {variant.attribute} left out")
    classes = sorted(target[usable & (target != UNKNOWN)].unique())
    values = sorted(attribute[usable].unique())
    if not classes or not values:
        return None
    pairs = dict(variant.pairs) or default_pairs(classes, values)
    unpaired = [c for c in classes if c not in pairs]
    if unpaired:
        notes.append(f"classes without a pair in 'pairs' are left out: {', '.join(unpaired)}")
    strange = sorted({v for v in pairs.values() if v not in values})
    if strange:
        notes.append(f"paired values never seen in {variant.attribute}: {', '.join(strange)} (seen: {', '.join(values)})")
    return usable & target.isin(list(pairs)), attribute == target.map(pairs), pairs


def _aligned_by_range(variant: BiasedVariant, rows: pd.DataFrame, target: pd.Series,
                      notes: list[str]) -> tuple[pd.Series, pd.Series, dict[str, Any]] | None:
    """The same for ranges of a numeric attribute: a row is aligned when its number lies in
    its class's range (both ends included), e.g. women 16-35 and men 40-70."""
    if variant.attribute not in rows.columns:
        return None
    numbers = pd.to_numeric(rows[variant.attribute].astype("string").str.strip(), errors="coerce")
    usable = numbers.notna()
    if (~usable).any():
        notes.append(f"{int((~usable).sum())} images without a number in {variant.attribute} left out")
    pairs = {c: list(r) for c, r in variant.pairs.items()}
    unpaired = sorted(set(target[usable & (target != UNKNOWN)]) - set(pairs))
    if unpaired:
        notes.append(f"classes without a range in 'pairs' are left out: {', '.join(unpaired)}")
    usable &= target.isin(list(pairs))
    if not usable.any():
        return None
    low = target.map(lambda c: pairs[c][0] if c in pairs else np.nan).astype(float)
    high = target.map(lambda c: pairs[c][1] if c in pairs else np.nan).astype(float)
    aligned = (numbers >= low) & (numbers <= high)
    for c, (lo, hi) in pairs.items():
        if not (aligned & usable & (target == c)).any():
            notes.append(f"no {c!r} image has {variant.attribute} in [{lo:g}, {hi:g}]")
    return usable, aligned.fillna(False).astype(bool), pairs


def default_pairs(classes: list[str], values: list[str]) -> dict[str, str]:
    """Both sorted, paired in order and cycling through the values (cs->female, econ->male)."""
    return {c: values[i % len(values)] for i, c in enumerate(classes)}


def biased(variant: BiasedVariant, rows: pd.DataFrame, recipe: Recipe) -> tuple[pd.Series, dict[str, Any], list[str]]:
    """Train/val with the paired attribute value in a share `strength` of each class; the
    complement is the test set."""
    notes: list[str] = []
    target = target_classes(rows, recipe).fillna(UNKNOWN)
    found = _aligned_by_range(variant, rows, target, notes) if _ranged(variant) else _aligned_by_value(
        variant, rows, recipe, target, notes)
    if found is None:
        notes.append(f"no kept image has both a {recipe.target!r} and a {variant.attribute!r} value, so the variant is empty")
        return pd.Series(dtype="string"), {"attribute": variant.attribute, "strength": variant.strength}, notes
    usable, aligned_rows, pairs = found
    pool = rows[usable]
    aligned = aligned_rows[usable].to_numpy()
    groups = group_ids(pool, recipe.split.group_by)
    classes_of = target[usable].to_numpy()
    cell = np.array([f"{c}{SEP}{a}" for c, a in zip(classes_of, aligned)], dtype=object)
    strength = variant.strength

    def settle(reached: pd.Series) -> dict[str, int] | None:
        """Quotas that give each class the asked share of paired images, from what is there."""
        quota = {}
        for c in pairs:
            a, m = int(reached.get(f"{c}{SEP}True", 0)), int(reached.get(f"{c}{SEP}False", 0))
            want_m = round(a * (1 - strength) / strength)
            if want_m <= m:
                quota[f"{c}{SEP}True"], quota[f"{c}{SEP}False"] = a, want_m
            else:
                quota[f"{c}{SEP}True"], quota[f"{c}{SEP}False"] = round(m * strength / (1 - strength)), m
        return None if all(quota[k] == reached.get(k, 0) for k in quota) else quota

    available = pd.Series(cell, dtype=object).value_counts()
    mask = _select(groups, cell, settle(available) or available.to_dict(), recipe.split.seed, settle, notes)
    train_val, complement = pool[mask], pool[~mask]
    share = recipe.split.train + recipe.split.val
    ratios = {"train": recipe.split.train / share, "val": recipe.split.val / share}
    fields = list(dict.fromkeys([recipe.target, variant.attribute]))
    splits, strata = _split_chosen(train_val, fields, recipe, ratios, notes)
    splits = pd.concat([splits, pd.Series("test", index=complement.index, dtype="string")])
    if complement.empty:
        notes.append("the complement is empty, so there is no test set; lower or raise 'strength'")
    shares = pd.DataFrame({"split": splits.reindex(pool.index), "cls": target[usable], "aligned": aligned})
    aligned_share: dict[str, dict[str, float]] = {}
    for (split, c), value in shares.groupby(["split", "cls"])["aligned"].mean().items():
        aligned_share.setdefault(str(split), {})[str(c)] = round(float(value), 4)
    figures = {
        "attribute": variant.attribute,
        "strength": strength,
        "pairs": pairs,
        "aligned_share": aligned_share,
        **achieved(splits[train_val.index], strata, ratios),
        "test_images": int(len(complement)),
    }
    return splits, figures, notes
