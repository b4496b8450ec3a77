"""Plain nn.Modules shared by experiment families."""
