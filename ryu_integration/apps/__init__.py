"""Example apps built on the mastership guard (`learning_switch`)."""
