"""The executable UDF, shipped as package data of its own: ClickHouse runs working_time.py as a script."""
