#!/usr/bin/env python3
"""Runs one SQL query with DuckDB and prints its rows as a JSON list of
lists. Integers stay exact: DuckDB hands UBIGINT values to Python as ints.

Usage: query_duckdb.py SQL
"""

import json
import sys

import duckdb

rows = duckdb.sql(sys.argv[1]).fetchall()
json.dump([list(row) for row in rows], sys.stdout, default=str)
