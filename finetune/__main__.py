from finetune.cli import run

run()
