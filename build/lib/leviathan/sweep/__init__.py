"""leviathan.sweep"""
