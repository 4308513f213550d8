"""``rem methods``: the registered unlearning methods, or one method's settings."""

from __future__ import annotations

from rem.cli.args import print_settings


def add_parser(sub) -> None:
    p = sub.add_parser("methods", help="list the registered unlearning methods, or one method's settings")
    p.add_argument(
        "--settings",
        metavar="NAME",
        default=None,
        help="print every setting of method NAME with its help text, type and default",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from rem.methods import REGISTRY, get_method, method_names

    if args.settings:
        cls = type(get_method(args.settings))  # refuses an unknown name
        usage = f"rem unlearn --set KEY=VALUE, rem bench --set {cls.name}.KEY=VALUE"
        print_settings(cls.name, f"{cls.summary}  [uses {cls.uses}]", cls.config_cls, usage)
        return 0
    width = max(len(n) for n in REGISTRY)
    fam = max(len(REGISTRY[n].family) for n in REGISTRY)
    for name in method_names():
        cls = REGISTRY[name]
        print(f"{name:<{width}}  {cls.family:<{fam}}  {cls.summary}  [uses {cls.uses}]")
    return 0
