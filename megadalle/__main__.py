from megadalle.cli import entry

entry()
