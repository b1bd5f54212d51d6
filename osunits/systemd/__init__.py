"""systemd syntax: escaping values into unit and .nspawn files, and reading them back."""
