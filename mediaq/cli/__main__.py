from mediaq.cli import main

main()
