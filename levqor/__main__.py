from levqor.cli import main

main()
