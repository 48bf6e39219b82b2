from stardock_hpc.cli import main

main()
