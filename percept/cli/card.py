"""``percept card``: print the model card of an exported model."""

from __future__ import annotations

import json

from percept.errors import PerceptError
from percept.model.io import load_model
from percept.study.model_card import card_markdown


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "card", help="print a model's card: inputs, filters, data, K, scores, interval coverage, domain",
        description="The model card stored in a model file by 'percept evaluate --export' or "
                    "'clip_retrieval_knn --export': what made the model and how far its numbers can be trusted.")
    parser.add_argument("model", metavar="MODEL.npz", help="an exported model")
    parser.add_argument("--json", action="store_true", help="print the card as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    model = load_model(args.model)
    if model.card is None:
        raise PerceptError(f"{args.model} holds no model card (exported by an older version or another tool): "
                           "re-export it with 'percept evaluate --export' or 'clip_retrieval_knn --export'")
    if args.json:
        print(json.dumps(model.card, indent=2))
    else:
        print(card_markdown(model.card), end="")
    return 0
