import sys

if sys.argv[1:2] == ["outage"]:
    from bench.outage import main as outage

    outage(sys.argv[2:], prog="python -m bench outage")
elif sys.argv[1:2] == ["secrets"]:
    from bench.secrets import main as secrets

    secrets(sys.argv[2:], prog="python -m bench secrets")
elif sys.argv[1:2] == ["lucidcall"]:
    from bench.lucidcall import main as lucidcall

    lucidcall(sys.argv[2:], prog="python -m bench lucidcall")
else:
    from bench.run import main

    main()
