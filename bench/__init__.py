"""The lucidgrant benchmark: `make bench` (`python -m bench --help`)."""
