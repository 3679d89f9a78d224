"""Seed 001: boundary attributions (Wang, Wang, Ramkumar, Fredrikson, Mardziel & Datta,
"Robust models are more interpretable because attributions look normal", ICML 2022).

The paper's claims: attributions taken at the closest decision-boundary point (BSM, the
saliency there; BIG, integrated gradients from it, :mod:`lipxai.explain.boundary_based`) are
more concentrated than ordinary ones, and robust models make ordinary attributions close to
boundary attributions, which is why their attributions "look normal".  Compared on three
models per dataset (``configs/explanation_training.py``): a standard CNN
(``standard/DATASET/plain_cnn``), the same CNN trained on PGD examples
(``pgd_adversarial/DATASET/plain_cnn``) and the 1-Lipschitz CNN
(``standard/DATASET/lipschitz_cnn``); the same runs as ``lipschitz_saliency``.

On the first ``n`` test images, for the predicted class, with one boundary search per model
(:func:`lipxai.boundary.search`, its PGD ladder, as the paper) shared by BSM and BIG:

* concentration: the Gini index of each map (:func:`lipxai.metrics.sparseness`, higher is more
  concentrated), for the saliency map, IG from the zero, blurred and uniform-noise baselines,
  BSM and BIG; the claim is checked for BSM against the saliency map and for BIG against IG.
  IG from zeros is 0 on the black background, which raises its Gini index by construction;
* localisation to the object: the share of ``|attribution|`` on the pixels > 0 of the image
  (:func:`lipxai.metrics.attribution_localisation`).  IG from the zero baseline is 0 wherever
  the image is, so its localisation is 1 by construction; the other baselines are not;
* sensitivity to the IG baseline: the mean pairwise cosine similarity of IG from the three
  baselines (:func:`lipxai.apps.reproduce.measures.mean_pairwise_cosine`; 1: insensitive);
* closeness of ordinary and boundary attributions: the cosine similarity of IG (zero baseline)
  with BIG, and of the saliency map with BSM.

Full mode: the 6 runs of ``lipschitz_saliency`` (the same run specs, hence the same run
directory names: link or copy ``results/lipschitz_saliency/runs`` to
``results/boundary_attributions/runs`` to train them once) and 128 images per model; sized for
about 1.5 to 2 hours on a 2-core CPU when it trains the runs itself, about a quarter of an hour
when it reuses them.  ``--fast``: MNIST, 8 images, a short boundary search.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lipxai import boundary, explain, metrics
from lipxai.apps.reproduce.measures import accuracy, accuracy_scope, cosine, digit_mask, mean_pairwise_cosine
from lipxai.apps.reproduce.runs import RunSpec

NAME = "boundary_attributions"
TITLE = "Boundary attributions on standard, robust and 1-Lipschitz models (Wang et al., ICML 2022)"
#: ``(label, method, model)`` of the three models compared.
MODELS = (("standard", "standard", "plain_cnn"),
          ("PGD-trained", "pgd_adversarial", "plain_cnn"),
          ("1-Lipschitz (HKR)", "standard", "lipschitz_cnn"))
#: The attribution methods, in table order.
METHODS = ("saliency", "IG (zeros)", "IG (blur)", "IG (uniform)", "BSM", "BIG")
#: The ordinary attributions each boundary attribution is compared with (the paper: BSM with the
#: saliency map, BIG with IG).
ORDINARY = {"BSM": ("saliency",), "BIG": ("IG (zeros)", "IG (blur)", "IG (uniform)")}

FULL = dict(accuracy_n=None, datasets=("mnist", "fashion_mnist"), n=128, batch=64, ig_steps=32, big_steps=16,
            blur_sigma=5.0, search={})
FAST = dict(accuracy_n=256, datasets=("mnist",), n=8, batch=8, ig_steps=4, big_steps=4, blur_sigma=5.0,
            search=dict(num_eps=6, steps=5, eps_bisect=2, refine_steps=10))


def specs(settings) -> list[tuple[str, str, RunSpec]]:
    """``(dataset, model label, RunSpec)`` for every run of the experiment."""
    return [(dataset, label, RunSpec(f"explanation_training.py:{method}/{dataset}/{model}", (), label))
            for dataset in settings["datasets"] for label, method, model in MODELS]


def attributions(fn, x, settings, key) -> tuple[dict, np.ndarray]:
    """``({method: attribution}, boundary found)`` of ``fn``'s predicted class on a batch
    (``settings["search"]``: options of the boundary search)."""
    target = jnp.argmax(fn(x), axis=1)
    point = boundary.search(fn, x, target, **settings["search"])
    ig = dict(steps=settings["ig_steps"])
    maps = {"saliency": explain.saliency(fn, x, target),
            "IG (zeros)": explain.integrated_gradients(fn, x, target, **ig),
            "IG (blur)": explain.integrated_gradients(fn, x, target, baseline="blur",
                                                      sigma=settings["blur_sigma"], **ig),
            "IG (uniform)": explain.integrated_gradients(fn, x, target, baseline="uniform", key=key, **ig),
            "BSM": explain.boundary_saliency(fn, x, target, boundary=point),
            "BIG": explain.big(fn, x, target, boundary=point, steps=settings["big_steps"])}
    return {m: np.asarray(a) for m, a in maps.items()}, np.asarray(point.success)


def scores(maps: dict, x) -> dict:
    """Per-example scores ``float[B]`` of one batch: ``gini/METHOD``, ``localisation/METHOD``,
    ``baseline_similarity``, ``cos(IG, BIG)`` and ``cos(saliency, BSM)``."""
    mask = digit_mask(x)
    out = {}
    for m, a in maps.items():
        out[f"gini/{m}"] = np.asarray(metrics.sparseness(a), np.float64)
        out[f"localisation/{m}"] = np.asarray(metrics.attribution_localisation(a, mask), np.float64)
    out["baseline_similarity"] = mean_pairwise_cosine([maps["IG (zeros)"], maps["IG (blur)"],
                                                       maps["IG (uniform)"]])
    out["cos(IG, BIG)"] = cosine(maps["IG (zeros)"], maps["BIG"])
    out["cos(saliency, BSM)"] = cosine(maps["saliency"], maps["BSM"])
    return out


def measure(run, settings, key) -> dict:
    """Accuracy, and the mean of every score over the first ``n`` test images (NaN-free
    examples; BSM and BIG are NaN where the boundary search failed)."""
    x, _ = run.split("test", settings["n"])
    per, found = [], []
    for lo in range(0, len(x), settings["batch"]):
        xb = jnp.asarray(x[lo:lo + settings["batch"]])
        maps, ok = attributions(run.apply, xb, settings, jax.random.fold_in(key, lo))
        per.append(scores(maps, np.asarray(xb)))
        found.append(ok)
    means = {k: float(np.nanmean(np.concatenate([p[k] for p in per]))) for k in per[0]}
    return dict(accuracy=accuracy(run, settings["accuracy_n"]), boundary_found=float(np.concatenate(found).mean()), **means)


def run(settings, trained) -> dict:
    """Train (or reuse) the three models per dataset with ``trained(spec) -> Run`` and measure them."""
    key = jax.random.PRNGKey(1)
    results = [dict(dataset=dataset, model=label, config=spec.config, **measure(trained(spec), settings, key))
               for dataset, label, spec in specs(settings)]
    return dict(title=TITLE, settings=settings, results=results, tables=tables(settings, results),
                panels=panels(settings, results), findings=findings(settings, results))


def tables(settings, results) -> list[dict]:
    """Two tables: concentration and localisation per method; the model-level similarities."""
    caption = (f"Seed 0 per model; the first {settings['n']} test images, predicted class; IG with "
               f"{settings['ig_steps']} Gauss-Legendre steps (blur σ = {settings['blur_sigma']} pixels, "
               f"uniform noise in [0, 1]), BIG with {settings['big_steps']}; BSM and BIG from one PGD-ladder "
               f"boundary search per model (options {settings['search'] or 'the defaults'}); clean accuracy "
               f"on {accuracy_scope(settings['accuracy_n'])}.")
    per_method = dict(caption=caption + " Gini index ↑ (concentration) and share of |attribution| on the "
                                        "pixels > 0 ↑ (localisation; 1 by construction for IG from zeros).",
                      header=["data", "model", "clean acc.", *(f"Gini {m}" for m in METHODS),
                              *(f"loc. {m}" for m in METHODS)],
                      rows=[[r["dataset"], r["model"], f"{r['accuracy']:.4f}",
                             *(f"{r[f'gini/{m}']:.3f}" for m in METHODS),
                             *(f"{r[f'localisation/{m}']:.3f}" for m in METHODS)] for r in results])
    similarity = dict(caption="Mean cosine similarities per model: IG from zero, blurred and uniform "
                              "baselines, pairwise (1: insensitive to the baseline); IG (zeros) with BIG; "
                              "the saliency map with BSM; and the share of images with a boundary point.",
                      header=["data", "model", "IG baseline similarity", "cos(IG, BIG)", "cos(saliency, BSM)",
                              "boundary found"],
                      rows=[[r["dataset"], r["model"], f"{r['baseline_similarity']:.3f}",
                             f"{r['cos(IG, BIG)']:.3f}", f"{r['cos(saliency, BSM)']:.3f}",
                             f"{r['boundary_found']:.3f}"] for r in results])
    return [per_method, similarity]


def panels(settings, results) -> list[dict]:
    """Per dataset: Gini and localisation against the method, a series per model; and the
    similarities against the model, a series per dataset."""
    out = []
    for d in settings["datasets"]:
        mine = [r for r in results if r["dataset"] == d]
        for what, ylabel in (("gini", "Gini index of |attribution| (0-1)"),
                             ("localisation", "share of |attribution| on the object")):
            out.append(dict(title=f"{d}: {what} (higher is better)", xlabel="attribution method",
                            ylabel=ylabel, linestyle="none",
                            series={r["model"]: dict(x=list(METHODS), y=[r[f"{what}/{m}"] for m in METHODS])
                                    for r in mine}))
    labels = [label for label, _, _ in MODELS]
    for q in ("baseline_similarity", "cos(IG, BIG)"):
        name = "IG similarity across baselines" if q == "baseline_similarity" else "cos(IG, BIG)"
        out.append(dict(title=f"{name} (higher: closer)", xlabel="model", ylabel="mean cosine similarity",
                        linestyle="none",
                        series={d: dict(x=labels, y=[next(r[q] for r in results
                                                          if r["dataset"] == d and r["model"] == m)
                                                     for m in labels])
                                for d in settings["datasets"]}))
    return out


def findings(settings, results) -> list[str]:
    """The two claims, checked per dataset and model."""
    out = []
    for d in settings["datasets"]:
        mine = {r["model"]: r for r in results if r["dataset"] == d}
        for m, r in mine.items():
            for b, ordinary in ORDINARY.items():
                against = ", ".join(f"{k} {r[f'gini/{k}']:.3f}" for k in ordinary)
                beaten = sum(r[f"gini/{b}"] > r[f"gini/{k}"] for k in ordinary)
                out.append(f"{d} / {m}: Gini of {b} {r[f'gini/{b}']:.3f} against {against}: 'boundary "
                           f"attributions are more concentrated' holds against {beaten} of {len(ordinary)}.")
        standard = mine[MODELS[0][0]]
        for m in (label for label, _, _ in MODELS[1:]):
            closer = mine[m]["cos(IG, BIG)"] > standard["cos(IG, BIG)"]
            out.append(f"{d}: cos(IG, BIG) {mine[m]['cos(IG, BIG)']:.3f} for the {m} model against "
                       f"{standard['cos(IG, BIG)']:.3f} for the standard one (cos(saliency, BSM) "
                       f"{mine[m]['cos(saliency, BSM)']:.3f} against {standard['cos(saliency, BSM)']:.3f}): "
                       f"'robust models make ordinary attributions closer to boundary attributions' "
                       f"{'holds' if closer else 'does not hold'} for it.")
        out.append(f"{d}: IG similarity across baselines " + ", ".join(
            f"{m} {r['baseline_similarity']:.3f}" for m, r in mine.items()) + ".")
    return out
