"""The blend report: one self-contained HTML file (inline SVG and images, no script, no network).

On top, where there is one, the line that says the blend is not above the unknown label alone or
its best member on validation (kit/post/baseline.py). Sections: the members' scores (the recipe's metric), their weights and how their errors correlate; each member's
reliability (top-1 probability against top-1 accuracy) and expected calibration error; the ablation of the
steps with each gain's paired bootstrap interval; what the recipe fitted on validation (the ensemble
selection's picks, P(new)'s reliability, the pseudo-label gate's precision curve); MAP@5 and the new_whale share against the
threshold; Optuna's history, the held-out gain and the parameter importances (after tune.py); the
distribution of top-1 scores; a gallery of the worst validation errors. It renders a
`evaluation.BlendRun`, the evaluation blend.py made, so every number is the one blend.py printed.
"""
from __future__ import annotations

import base64
import datetime
import io
from html import escape
from pathlib import Path

import numpy as np

from kit.data.images import BadImage, decode
from kit.io import Outputs, write_text
from kit.post import evaluation, pipeline
from kit.post.inputs import Inputs
from kit.post.recipe import BlendRecipe, load_recipe
from kit.report import svg
from kit.tune.storage import open_storage

GALLERY_ROWS = 12
THUMB = (150, 75)
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left} .muted{color:#777;font-size:90%}
.gallery td{vertical-align:top;text-align:center;font-size:11px;padding:3px} .gallery img{display:block;max-width:150px;margin:auto}
.scroll{overflow-x:auto} .bar{background:#1f77b4;height:12px;display:inline-block;vertical-align:middle}
.warn{background:#fff4e5;border-left:4px solid #e67e22;padding:8px 12px;margin:12px 0}
.hit{outline:3px solid #2ca02c} .truth{outline:3px solid #1f77b4} figure{display:inline-block;margin:0 12px 12px 0}
"""


def _table(header: list[str], rows: list[list], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{escape(str(h))}</th>' for i, h in enumerate(header))
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            text = f"{v:.4f}" if isinstance(v, float) else escape(str(v))
            cells.append(f'<td class="{"l" if i < left else ""}">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{th}</tr>{''.join(body)}</table>"


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def members_section(run: evaluation.BlendRun) -> str:
    d = run.diagnostics
    rows = [[a.name, a.kind, a.weight, a.score_bare, a.score_with_steps] for a in d.members]
    rows.append(["blend", "", 1.0, d.blend_bare, run.val[1].score])
    body = _table(["member", "kind", "weight", f"{run.val[1].scorer.title} alone", "alone + steps"], rows, left=2)
    w = run.weights
    if w is not None:
        body += (f"<p>Automatic weights ({escape(w.basis)}), {escape(w.choice)}. Correlation-aware: weight ∝ "
                 "√skill / near-copies, rounded to tenths of the largest, kept only if they score at least as well "
                 "on validation as equal weights. Skill is the member's MAP@5 at ranking known identities; "
                 "near-copies is the sum of its similarities to every member, itself included (how alike their "
                 "errors are above the noise floor, 0 to 1), so members that fail on the same images share one "
                 "weight.</p>"
                 + _table(["member", "weight", "skill", "near-copies"],
                          [[n, float(x), float(q), float(c)] for n, x, q, c in zip(w.names, w.weights, w.skill, w.copies)]))
    if d.marks_correlation is not None:
        body += (f"<p>Correlation of the members' per-image {escape(run.val[1].scorer.title)} marks (blend alone, no steps): members that fail on "
                 "different images blend best.</p>" + svg.heatmap(d.marks_correlation, [a.name for a in d.members]))
    return _section("members", "Members", body)


def calibration_section(run: evaluation.BlendRun) -> str:
    """Each member's reliability on validation: its top-1 probability against how often it is right."""
    curves = {a.name: a.reliability for a in run.diagnostics.members if a.reliability is not None}
    if not curves:
        return _section("calibration", "Calibration", "<p>No member gives probabilities (a rank calibration does "
                                                       "not).</p>")
    series = {"perfect": ([0.0, 1.0], [0.0, 1.0])}
    series |= {name: (list(c.confidence), list(c.accuracy)) for name, c in curves.items()}
    body = ("<p>Each member alone, in the recipe's calibration: its top-1 probability (x, binned by tenths) "
            "against the share of those validation images whose top-1 is their animal (y). On the diagonal, "
            "a probability means what it says, and probabilities of different members can be averaged; ECE "
            "(expected calibration error) is the images-weighted mean gap. Fitted calibrations (inliers) "
            "are fitted on these very images, so theirs lean optimistic.</p>"
            + svg.line_chart(series, "top-1 probability", "top-1 right")
            + _table(["member", "ECE", "images"], [[n, c.ece, int(c.counts.sum())] for n, c in curves.items()]))
    return _section("calibration", "Calibration", body)


def decisions_section(run: evaluation.BlendRun) -> str:
    """What the recipe fitted on validation beyond the threshold: the selection's picks, P(new)'s
    reliability, the pseudo-label gate's precision curve; empty when it fitted none of them."""
    d, parts = run.diagnostics, []
    w = run.weights
    if w is not None and w.picks is not None:
        rows = [[f"resample {b + 1}"] + [int(k) for k in bag] for b, bag in enumerate(w.picks)]
        rows.append(["weight"] + [float(x) for x in w.weights])
        parts.append("<h3>Ensemble selection</h3><p>Each bootstrap resample of the validation images picks a "
                     "multiset of members greedily on MAP@5 after the steps (with replacement: a member may be "
                     "picked again); a member's weight is its mean share of the picks.</p>"
                     + "<div class='scroll'>" + _table(["picks"] + list(w.names), rows) + "</div>")
    r = d.new_whale_reliability
    if r is not None:
        parts.append("<h3>P(new)</h3><p>The model's P(the animal is new) for each validation image, cross-fitted "
                     "(by a model that never saw the image), binned by tenths, against the share of those images "
                     f"whose animal is new. ECE {r.ece:.3f}.</p>"
                     + svg.line_chart({"perfect": ([0.0, 1.0], [0.0, 1.0]), "P(new)": (list(r.confidence), list(r.accuracy))},
                                      "P(new)", "share new")
                     + _table(["P(new), bin mean", "share new", "images"],
                              [[float(c), float(a), int(n)] for c, a, n in zip(r.confidence, r.accuracy, r.counts)]))
    if d.pseudo_curve is not None:
        kept, share, low = d.pseudo_curve
        gate = run.summary.get("pseudo_gate") or {}
        cut = gate.get("kept") or None
        parts.append("<h3>Pseudo-label gate</h3><p>Validation images the pseudo-label rule keeps, most confident "
                     "first: the share right and the lower end of its 95% interval. The gate keeps the most whose "
                     f"lower end reaches the target {run.recipe.pseudo.precision:g}"
                     + (f": {cut} images." if cut else ": none does.") + "</p>"
                     + svg.line_chart({"share right": (list(kept), list(share)), "95% lower end": (list(kept), list(low)),
                                       "target": ([1, int(kept[-1])], [run.recipe.pseudo.precision] * 2)},
                                      "validation images kept", "precision"))
    if not parts:
        return ""
    return _section("decisions", "Decisions fitted on validation", "".join(parts))


def ablation_section(results: dict[str, pipeline.Result]) -> str:
    parts = []
    for split, r in results.items():
        if not r.score_by_step:
            continue
        title = r.scorer.title
        rows = [[s, v, "", ""] if g is None else
                [s, v, f"{g.value:+.4f}", f"[{g.low:+.4f}, {g.high:+.4f}]" + (" (noise)" if not g.significant else " (costs)" if g.high < 0 else "")]
                for s, v, g in r.step_gains()]
        parts.append(f"<figure><figcaption>{escape(split)} ({len(r.images)} images)</figcaption>"
                     + svg.bar_chart(list(r.score_by_step), list(r.score_by_step.values()), title)
                     + _table(["step", title, "gain", "95% interval"], rows) + "</figure>")
    body = ("<p>Each gain is over the step before, on the same images, with its paired bootstrap 95% interval; "
            "an interval that holds 0 is within the noise; one wholly below 0 is a step that costs.</p>" + "".join(parts)) if parts else "<p>No split with truth.</p>"
    return _section("ablation", "Ablation of the steps", body)


def threshold_section(run: evaluation.BlendRun) -> str:
    if run.diagnostics.threshold_curve is None:
        return _section("threshold", "new_whale threshold", "<p>The recipe has no new_whale step.</p>")
    grid, maps, shares = run.diagnostics.threshold_curve
    result = run.val[1]
    title = result.scorer.title
    best = int(np.argmax(maps))
    if result.threshold is None:  # placed by a P(new) model: the sweep is what one threshold would do instead
        recipe_s, marker = (f"placed by P(new), no threshold: {title} {result.score:.4f} (in-sample), new_whale first in "
                            f"{result.new_whale_share:.1%}"), None
    else:
        recipe_s = f"{result.threshold:.3g} ({title} {result.score:.4f}, {result.new_whale_share:.1%})"
        marker = (result.threshold, result.score, f"chosen {result.threshold:.3g}: {title} {result.score:.4f}")
    body = (f"<p>Sweeping the threshold with everything else as in the recipe. Best on this split: "
            f"{grid[best]:.3g} ({title} {maps[best]:.4f}, new_whale first in {shares[best]:.1%}); the recipe's: "
            f"{recipe_s}.</p>"
            + svg.line_chart({title: (grid, list(maps)), "new_whale share": (grid, list(shares))}, "threshold", "value",
                             marker=marker))
    return _section("threshold", "new_whale threshold", body)


def scores_section(result: pipeline.Result) -> str:
    top1 = result.top_scores[:, 0]
    groups = {"all images": top1}
    if result.truth is not None:
        unknown = result.truth == result.unknown_code
        right = result.top_codes[:, 0] == result.truth
        groups = {"truth new_whale": top1[unknown], "known, top-1 right": top1[~unknown & right],
                  "known, top-1 wrong": top1[~unknown & ~right]}
        groups = {k: v for k, v in groups.items() if len(v)}
    body = ("<p>Blended top-1 score. new_whale images should sit to the left of the threshold, right "
            "answers to the right.</p>" + svg.histogram(groups, "blended top-1 score"))
    return _section("scores", "Score distribution", body)


def optuna_section(summary) -> str:
    if summary is None:
        return _section("optuna", "Tuning", "<p>Not tuned yet: <code>python scripts/tune.py RECIPE</code> adds "
                                           "Optuna's history and the parameter importances here.</p>")
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=summary.study_name, storage=open_storage(summary.storage))
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    x = np.array([t.number for t in trials], float)
    y = np.array([t.value for t in trials], float)
    body = (f"<p>Study <code>{escape(summary.study_name)}</code> in <code>{escape(summary.storage)}</code>: "
            f"{len(trials)} finished trials. Trials see the tuning part of the validation images only"
            f"{escape(summary.objective_note)}.</p>"
            + _table(["", "tuning part", "held-out part", "all val"],
                     [["untuned", summary.untuned["tune"], summary.untuned["holdout"], summary.untuned["all"]],
                      ["tuned", summary.best["tune"], summary.best["holdout"], summary.best["all"]]])
            + f"<p><b>On the held-out part</b>: {escape(summary.verdict())}.</p>"
            + svg.line_chart({"trial": (x, y), "best so far": (x, np.maximum.accumulate(y))}, "trial", "score (tuning part)"))
    if summary.importances:
        top = max(summary.importances.values()) or 1.0
        rows = "".join(
            f"<tr><td class='l'><code>{escape(n)}</code></td><td>{summary.best_params.get(n, float('nan')):.5g}</td>"
            f"<td class='l'><span class='bar' style='width:{200 * v / top:.0f}px'></span> {v:.3f}</td></tr>"
            for n, v in summary.importances.items())
        body += ("<p>Parameter importances (PED-ANOVA over the finished trials) and the best trial's values.</p>"
                 f"<table><tr><th class='l'>parameter</th><th>best value</th><th class='l'>importance</th></tr>{rows}</table>")
    return _section("optuna", "Tuning", body)


def _thumb(path: Path, cls: str = "") -> str:
    try:
        im = decode(path, "RGB")
        im.thumbnail(THUMB)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=80)
    except BadImage:
        return f'<div class="muted">unreadable: {escape(path.name)}</div>'
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img class="{cls}" src="data:image/jpeg;base64,{data}" alt="{escape(path.name)}">'


def gallery_section(inputs: Inputs, result: pipeline.Result) -> str:
    if result.marks is None:
        return _section("gallery", "Worst validation errors", "<p>No truth for this split.</p>")
    comp = inputs.competition
    examples: dict[str, str] = {}
    for image, label in zip(comp.train["image"], comp.train["label"]):
        examples.setdefault(label, image)
    order = np.lexsort((-result.top_scores[:, 0], result.marks))[:GALLERY_ROWS]
    rows = []
    for i in order:
        truth = inputs.labels[result.truth[i]] if result.truth[i] >= 0 else "?"
        cells = [f"<td>{_thumb(comp.image_path(inputs.images[i], 'train'))}<b>{escape(inputs.images[i])}</b><br>"
                 f"mark {result.marks[i]:.2f}, top-1 score {result.top_scores[i, 0]:.3f}</td>"]
        for code in result.top5[i]:
            if code < 0:
                cells.append("<td></td>")
                continue
            label = inputs.labels[code]
            example = examples.get(label) if code != result.unknown_code else None
            picture = _thumb(comp.image_path(example, "train"), "hit" if label == truth else "") if example and example != inputs.images[i] else ""
            cells.append(f"<td>{picture}{escape(label)}</td>")
        example = examples.get(truth) if truth != comp.unknown else None
        picture = _thumb(comp.image_path(example, "train"), "truth") if example and example != inputs.images[i] else ""
        cells.append(f"<td>{picture}<b>{escape(truth)}</b></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    header = "<tr><th>query</th>" + "".join(f"<th>#{k + 1}</th>" for k in range(5)) + "<th>truth</th></tr>"
    body = (f"<p>The validation images with the lowest marks ({escape(result.scorer.title)}), most confident first: the query, one train "
            "image of each predicted identity, and of the true one.</p>"
            f'<div class="scroll"><table class="gallery">{header}{"".join(rows)}</table></div>')
    return _section("gallery", "Worst validation errors", body)


def build(run: evaluation.BlendRun, summary=None) -> str:
    """The report's HTML for an evaluated recipe (and its tuning summary, if any)."""
    recipe = run.recipe
    results: dict[str, pipeline.Result] = {}
    sections = []
    skip = run.val_skipped
    val_inputs = val_result = None
    if run.val is not None:
        val_inputs, val_result = run.val
        results["validation"] = val_result
    results["test"] = run.test[1]

    members = ", ".join(escape(m.name) for m in recipe.members)
    head = (f"<h1>{escape(recipe.name)}</h1><p class='muted'>{escape(recipe.source)} · data {escape(recipe.data)} · "
            f"fold {recipe.fold} · members: {members} · {datetime.datetime.now():%Y-%m-%d %H:%M}</p>")
    # where the blend falls short of new_whale alone or of its best member: before anything else
    head += "".join(f"<p class='warn' id='warning'>{escape(line)}</p>" for line in run.warnings)
    if val_result is not None:
        sections.append(members_section(run))
        sections.append(calibration_section(run))
        sections.append(decisions_section(run))
    else:
        sections.append(_section("members", "Members", f"<p>No validation split: {escape(skip)}.</p>"))
    sections.append(ablation_section(results))
    if val_result is not None:
        sections.append(threshold_section(run))
    sections.append(optuna_section(summary))
    scored = val_result if val_result is not None else results["test"]
    sections.append(scores_section(scored))
    if val_result is not None:
        sections.append(gallery_section(val_inputs, val_result))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(recipe.name)} · whale-kit report</title>"
            f"<style>{CSS}</style></head><body>{head}{''.join(sections)}</body></html>")


def report_path(recipe: BlendRecipe) -> Path:
    return Path(recipe.output) / f"{recipe.name}.html"


def write_report(run: evaluation.BlendRun | BlendRecipe | str | Path, summary=None, out: Outputs | None = None) -> Path:
    """Write `<output>/<name>.html` atomically and return its path (a recipe is evaluated first);
    with `out`, stage it there, to be moved into place with the run's other files."""
    if not isinstance(run, evaluation.BlendRun):
        run = evaluation.evaluate(run if isinstance(run, BlendRecipe) else load_recipe(run))
    if run.val is not None and run.diagnostics is None:  # evaluated without them (blend_files(diagnostics=False))
        run.diagnostics = evaluation.diagnose(run.recipe, *run.val)
    path = report_path(run.recipe)
    return write_text(path, build(run, summary), out, note=f"wrote {path}")


def write_tune_report(summary, run: evaluation.BlendRun | None = None, out: Outputs | None = None) -> Path:
    """The tuned recipe's report, with the study's history, the held-out gain and the importances."""
    return write_report(run or summary.tuned, summary, out)
