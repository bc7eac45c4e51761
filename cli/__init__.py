"""The `tailor` command line. One module per command group; main.py wires them up."""
