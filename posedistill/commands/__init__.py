"""`posedistill COMMAND` mains, one module per command (`cli.py` maps the names); the top layer."""
