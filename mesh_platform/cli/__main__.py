from mesh_platform.cli import main

main()
