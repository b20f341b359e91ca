"""The training panel: runs started as child processes of the app, live curves, history."""
