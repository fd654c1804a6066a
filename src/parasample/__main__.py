from parasample.cli import run

run()
