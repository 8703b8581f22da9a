"""``percept encode``: turn a folder of images into CLIP vectors in clip-retrieval's layout."""

from __future__ import annotations

import sys

from percept.cli.common import add_hidden_alias, positive_int, stderr_messages
from percept.cli.engine_options import add_engine_arguments, engine_options
from percept.data.embeddings import default_embeddings_dir
from percept.encoders.precision import PRECISIONS
from percept.errors import PerceptError

DEFAULT_MODEL = "ViT-B/32"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "encode", help="encode a folder of images into CLIP vectors (clip-retrieval layout, cached)",
        description="Encode every image under IMAGES (png, jpg, jpeg, bmp, webp, at any depth) into "
                    "L2-normalised vectors in clip-retrieval's layout. Weights come from local files only; "
                    "percept:tiny is built in and needs none (its vectors carry no learned meaning).")
    parser.add_argument("images", metavar="IMAGES", help="folder of images")
    parser.add_argument("-o", "--output", metavar="DIRECTORY",
                        help="embeddings folder (default: embeddings-<model name, each character other than "
                             "letters, digits, . _ - replaced by _>)")
    parser.add_argument("-M", "--clip-model", dest="clip_model", default=DEFAULT_MODEL, metavar="MODELNAME",
                        help="percept:tiny, percept:small, open_clip:ARCH[/TAG], hf_clip:ORG/NAME or an OpenAI "
                             f"name such as ViT-B/32 (default {DEFAULT_MODEL})")
    add_hidden_alias(parser, "-m", "--model", dest="clip_model")
    parser.add_argument("--pretrained", metavar="PATH",
                        help="local checkpoint file or folder ('random': untrained open_clip architecture)")
    parser.add_argument("--encoder", choices=("builtin", "clip-retrieval"), default="builtin",
                        help="encode here (default) or with the external clip-retrieval command")
    parser.add_argument("--other-clip-retrieval-args", metavar="ARGS",
                        help="extra arguments for clip-retrieval inference (with --encoder clip-retrieval)")
    add_precision_argument(parser)
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default 64)")
    add_engine_arguments(parser, "decoding processes (default: one per core for large folders)")
    parser.add_argument("--part-size", type=positive_int, default=100_000,
                        help="images per embeddings part (default 100000)")
    parser.add_argument("--skip-cache", action="store_true", help="encode everything again, ignoring the cache")
    add_skip_missing_argument(parser)
    parser.add_argument("--read-only", action="store_true", help="encode in memory and write nothing")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    parser.set_defaults(run=run)


def add_precision_argument(parser) -> None:
    """``--precision``, for every command that encodes images."""
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="arithmetic of the encoder: auto (default: fp16 on CUDA, bf16 on a CPU with AMX or "
                             "AVX512-BF16, else fp32), fp32, bf16 or fp16; vectors in reduced precision agree with "
                             "fp32 ones to cosine 0.999, and a cache is never mixed across precisions")


def add_skip_missing_argument(parser) -> None:
    """``--skip-missing``, for every command that encodes images."""
    parser.add_argument("--skip-missing", action="store_true",
                        help="go on without images that cannot be reached (gone since they were listed, storage "
                             "not mounted on a node, no permission), with a warning, instead of failing with exit "
                             "status 1 once the rest is encoded; either way the next run reads them again")


def run(args) -> int:
    output = args.output or default_embeddings_dir(args.clip_model)
    engine = engine_options(args)
    if args.encoder == "clip-retrieval" and engine.engine != "local":
        raise PerceptError(f"--engine {engine.engine} runs the built-in encoder: leave out --encoder clip-retrieval")
    if args.encoder == "clip-retrieval":
        from percept.encoders.clip_retrieval import encode_images_external

        given = [flag for flag, used in (("--pretrained", args.pretrained), ("--precision", args.precision != "auto"),
                                         ("--skip-missing", args.skip_missing)) if used]
        if given:
            raise PerceptError(f"{given[0]} applies to the built-in encoder, not to clip-retrieval")
        say = stderr_messages(args.quiet)
        embeddings = encode_images_external(args.images, output, args.clip_model, args.other_clip_retrieval_args,
                                            skip_cache=args.skip_cache, read_only=args.read_only, log=say)
    else:
        from percept.engines import encode_images

        embeddings = encode_images(args.images, output, args.clip_model, engine, pretrained=args.pretrained,
                                   batch_size=args.batch_size, part_size=args.part_size,
                                   skip_cache=args.skip_cache, read_only=args.read_only, quiet=args.quiet,
                                   precision=args.precision, skip_missing=args.skip_missing)
    if not args.quiet:
        where = "in memory only (--read-only)" if args.read_only else f"in {output}"
        print(f"{len(embeddings.names)} vectors of dimension {embeddings.vectors.shape[1]} {where}", file=sys.stderr)
    return 0
