import sys

try:
    from .server import main
except ImportError as exc:  # e.g. numpy is missing: answer every request with how to fix it
    from .bare import answer_missing

    sys.exit(answer_missing(exc))
sys.exit(main())
