from asagi_cli.main import main

main()
