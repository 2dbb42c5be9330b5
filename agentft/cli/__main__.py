from agentft.cli import main

main()
