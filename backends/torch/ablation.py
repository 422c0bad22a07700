"""The paper's loss ablation on digits: which terms VICReg needs.

Trains the PyTorch example once per row, with everything but the coefficients ``(sim, std, cov)`` fixed,
and writes ``DIR/ablation.md`` (and ``ablation.json``): a Markdown table of the linear-probe and 20-NN
accuracy, the final mean per-dimension std and effective rank of the embeddings and the collapse flag,
beside the paper's ImageNet figures (ResNet-50, 100 epochs, linear top-1, from the paper)::

    python -m backends.torch.ablation                 # 4 runs with the example's defaults
    python -m backends.torch.ablation --epochs 10     # any flag of backends.torch.train except the coefficients

Expected (the paper's finding): the rows without the variance term collapse; the full loss beats the one
without covariance.
"""

from __future__ import annotations

import json
import os

from backends import common
from backends.torch import train as torch_train

#: (name, (sim_coeff, std_coeff, cov_coeff), the paper's figure). The paper's row without covariance
#: uses (1, 1, 0), the same ratio of invariance to variance as (25, 25, 0).
ROWS = [
    ("full VICReg", (25.0, 25.0, 1.0), "68.6"),
    ("without covariance", (25.0, 25.0, 0.0), "57.5 (at 1, 1, 0)"),
    ("without variance", (25.0, 0.0, 1.0), "collapse"),
    ("invariance only", (25.0, 0.0, 0.0), "collapse"),
]


def table(results: list[dict]) -> str:
    """The Markdown table of the ablation ``results`` (one metrics dict per row of :data:`ROWS`)."""
    lines = [
        "| loss | (sim, std, cov) | linear probe | 20-NN | mean std | effective rank | collapsed "
        "| paper, ImageNet linear top-1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, coeffs, paper), m in zip(ROWS, results):
        c = ", ".join(f"{x:g}" for x in coeffs)
        lines.append(
            f"| {name} | ({c}) | {m['linear_probe_accuracy']:.3f} | {m['knn_accuracy']:.3f} "
            f"| {m['embedding_std_mean']:.3f} | {m['effective_rank']:.1f} "
            f"| {'yes' if m['collapsed'] else 'no'} | {paper} |"
        )
    baseline = results[0]["random_init_linear_probe_accuracy"] if results else float("nan")
    lines.append("")
    lines.append(f"Random-init encoder, linear probe: {baseline:.3f}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = torch_train.build_parser("torch", description=__doc__.split("\n\n")[0])
    parser.prog = "python -m backends.torch.ablation"
    args = parser.parse_args(argv)
    common.check_args(parser, args)  # usage errors before torch loads
    if args.resume is not None:
        parser.error("--resume is not supported by the ablation; rerun it")
    root = args.out or common.default_out("ablation")
    from backends.torch import loop

    results = []
    for name, (sim, std, cov), _ in ROWS:
        row = parser.parse_args(argv)
        row.sim_coeff, row.std_coeff, row.cov_coeff = sim, std, cov
        row.out = os.path.join(root, name.replace(" ", "-"))
        print(f"== {name}: (sim, std, cov) = ({sim:g}, {std:g}, {cov:g})", flush=True)
        try:
            results.append(loop.train(row, loop.TorchLoss))
        except common.UsageError as e:
            parser.error(str(e))
    text = table(results)
    text += (
        f"\n{results[0]['dataset']}, {args.arch}, projector {'-'.join(map(str, args.proj_dims))}, "
        f"{args.epochs} epochs, seed {args.seed}; on {results[0]['device']}.\n"
    )
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "ablation.md"), "w") as f:
        f.write(text)
    with open(os.path.join(root, "ablation.json"), "w") as f:
        json.dump(
            [
                {
                    "name": r[0],
                    "coefficients": r[1],
                    "paper": r[2],
                    **{
                        k: m[k]
                        for k in (
                            "linear_probe_accuracy",
                            "knn_accuracy",
                            "embedding_std_mean",
                            "effective_rank",
                            "collapsed",
                            "random_init_linear_probe_accuracy",
                        )
                    },
                }
                for r, m in zip(ROWS, results)
            ],
            f,
            indent=2,
        )
    print(text)
    print(f"wrote {os.path.join(root, 'ablation.md')}")
    return results


if __name__ == "__main__":
    main()
