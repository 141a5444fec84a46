"""Test set-up of the MaxText recipe: the launcher is a program, not a module
to collect (it imports MaxText, which may not be installed)."""

collect_ignore = ['launcher.py']
