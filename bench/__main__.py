import sys

if sys.argv[1:2] == ["outage"]:
    from bench.outage import main as outage

    outage(sys.argv[2:], prog="python -m bench outage")
else:
    from bench.run import main

    main()
