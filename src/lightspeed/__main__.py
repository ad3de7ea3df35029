from lightspeed.cli import main

main()
