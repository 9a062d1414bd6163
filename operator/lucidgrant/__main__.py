from lucidgrant.cli import main

main()
