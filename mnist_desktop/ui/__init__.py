"""Qt widgets and the application. Only this package imports Qt."""
