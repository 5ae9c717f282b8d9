"""`poserft data import {posescript,3dpw,jsonl}`: the argument parsers and the dispatch (imports stay lazy)."""

from __future__ import annotations


def add_import_parsers(data_sub, func) -> None:
    """`poserft data import {posescript,3dpw,jsonl}` under the `data` command; `func` handles all three."""
    imp = data_sub.add_parser("import", help="import PoseScript/AMASS, 3DPW or your own JSONL (docs/datasets.md)")
    which = imp.add_subparsers(dest="source", required=True)
    ps = which.add_parser(
        "posescript", help="PoseScript v2 captions on AMASS SMPL-H poses -> text2pose and pose2text rows"
    )
    ps.add_argument(
        "--posescript",
        required=True,
        metavar="DIR",
        help="the PoseScript release folder (ids_2_dataset_..., *_ids_100k.json, captions)",
    )
    ps.add_argument(
        "--amass", required=True, metavar="DIR", help="the AMASS SMPL-H folder the mapping's npz paths are relative to"
    )
    ps.add_argument("--captions", choices=("human", "auto", "all"), default="human")
    pw = which.add_parser("3dpw", help="3DPW sequences and images -> image2pose rows (person crops)")
    pw.add_argument("--root", required=True, metavar="DIR", help="the 3DPW folder (sequenceFiles/, imageFiles/)")
    pw.add_argument(
        "--stride", type=int, default=1, help="keep every N-th frame (neighbouring frames are near duplicates)"
    )
    js = which.add_parser("jsonl", help="your own captioned poses and images, one JSON object per line")
    js.add_argument("--file", required=True, help="the JSONL file")
    js.add_argument(
        "--images",
        default=None,
        metavar="DIR",
        help="folder the `image` paths are relative to (default: the file's folder)",
    )
    js.add_argument("--licence", default=None, help="the licence of your data, recorded in the dataset card")
    for p in (pw, js):
        p.add_argument(
            "--image-size", type=int, default=64, help="side of the stored images, pixels (the policy's image size)"
        )
    for p in (ps, pw, js):
        p.add_argument("--out", required=True, help="output folder (replaced only when the import succeeds)")
        p.add_argument(
            "--smpl-dir",
            default=None,
            help="folder with SMPL_NEUTRAL.pkl for the target joints (default: built-in skeleton)",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=func)


def run_import(args) -> str:
    """Run the importer the parsed arguments name; returns the one-line summary."""
    from poserft.data.importers import import_3dpw, import_jsonl, import_posescript

    common = {"smpl_dir": args.smpl_dir, "progress": not args.quiet}
    if args.source == "posescript":
        card = import_posescript(args.posescript, args.amass, args.out, captions=args.captions, **common)
    elif args.source == "3dpw":
        card = import_3dpw(args.root, args.out, stride=args.stride, image_size=args.image_size, **common)
    else:
        extra = {"licence": args.licence} if args.licence else {}
        card = import_jsonl(args.file, args.out, images=args.images, image_size=args.image_size, **extra, **common)
    rows = ", ".join(f"{s} {v['rows']} rows" for s, v in card["splits"].items())
    pose_only = f", {card['pose_only']['rows']} pose-only poses" if "pose_only" in card else ""
    skipped = card["skipped"]["total"]
    return f"wrote {args.out}: {rows}{pose_only}; skipped {skipped} (see dataset_card.json); licence: {card['licence']}"
