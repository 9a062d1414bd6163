from lucidgrant_testbed.lucid.cli import main

main()
