from eventproc.cli import main

main()
