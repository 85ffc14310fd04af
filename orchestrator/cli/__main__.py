from orchestrator.cli.main import app

app()
